import unicodedata
import uuid

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    NODE = "node", "Node"


EMAIL_MAX_LENGTH = 254


def is_encodable(text: str) -> bool:
    """Lone surrogates are valid JSON but no database driver can send them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class UserQuerySet(models.QuerySet):
    def nodes(self):
        return self.filter(role=Role.NODE)


class UserManager(BaseUserManager.from_queryset(UserQuerySet)):
    use_in_migrations = True

    def get_by_natural_key(self, username):
        # The admin's login (ModelBackend) finds users by the API login's rule.
        user = self.get_for_login(username)
        if user is None:
            raise self.model.DoesNotExist(f"No user logs in as {username!r}.")
        return user

    def get_for_login(self, username: str) -> "User | None":
        """The user whose stored email is exactly the canonical form of `username`.

        Compared again in Python: MariaDB's _ci collations also match look-alikes
        (nodé3@ for node3@), which must not be second spellings with their own login budget.
        """
        # Checked before normalizing too: NFKC of a long text is costly (README, "What an
        # anonymous request can cost").
        if len(username) > EMAIL_MAX_LENGTH:
            return None
        email = self.normalize_email(username)
        if len(email) > EMAIL_MAX_LENGTH or not is_encodable(email):
            return None
        user = self.filter(email=email).first()
        return user if user is not None and user.email == email else None

    @classmethod
    def normalize_email(cls, email):
        """The one canonical form of an email: NFKC, case-folded, trimmed.

        Stored, compared and counted in this form, so one address has one spelling.
        """
        return unicodedata.normalize("NFKC", email or "").casefold().strip()

    def create_user(self, email, password=None, *, name="", role=Role.NODE, **extra):
        user = self.model(email=self.normalize_email(email), name=name, role=role, **extra)
        user.set_password(password)
        # Uniqueness is the database's to decide (see accounts.services.user_create_node):
        # a check here would answer a lost race differently from a plain duplicate.
        user.full_clean(exclude=["password"], validate_unique=False)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, *, name="", **extra):
        return self.create_user(email, password, name=name, role=Role.ADMIN, **extra)


class User(AbstractBaseUser):
    """A person or machine that logs in: an admin, or a worker node.

    Two roles and no per-object permissions: an admin may do everything in the
    admin site and the API, a node only what the API lets the assigned node do.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True, max_length=EMAIL_MAX_LENGTH)
    name = models.CharField(max_length=150)
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.NODE)
    is_active = models.BooleanField(
        default=True, help_text="Deactivated users cannot log in; their tokens stop working."
    )
    date_joined = models.DateTimeField(default=timezone.now, editable=False)
    # Stamped by the server's clock on each heartbeat or claim; liveness derives from it
    # (nodes.models, which owns everything a node's beats say).
    last_seen = models.DateTimeField(null=True, blank=True, editable=False)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["name"]

    class Meta:
        ordering = ["name", "email"]
        indexes = [
            models.Index(fields=["is_active", "name"], name="user_active_name"),
            # Failover: the nodes unseen since a moment.
            models.Index(fields=["role", "last_seen"], name="user_role_seen"),
        ]

    def __str__(self):
        return f"{self.name} <{self.email}>" if self.name else self.email

    def clean(self):
        super().clean()
        self.email = UserManager.normalize_email(self.email)
        if self.is_admin and not self._state.adding and self.tasks.exists():
            # Only nodes may hold tasks; promoting one that does would break that.
            raise ValidationError(
                {"role": "This user still holds tasks; reassign them before making it an admin."}
            )

    def save(self, *args, **kwargs):
        self.email = UserManager.normalize_email(self.email)
        super().save(*args, **kwargs)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_node(self) -> bool:
        return self.role == Role.NODE

    # The admin site and Django's permission checks read these three.
    @property
    def is_staff(self) -> bool:
        return self.is_active and self.is_admin

    @property
    def is_superuser(self) -> bool:
        return self.is_staff

    def has_perm(self, perm, obj=None) -> bool:
        return self.is_staff

    def has_perms(self, perm_list, obj=None) -> bool:
        return self.is_staff

    def has_module_perms(self, app_label) -> bool:
        return self.is_staff
