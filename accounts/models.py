import uuid

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    NODE = "node", "Node"


class UserManager(BaseUserManager):
    use_in_migrations = True

    def get_by_natural_key(self, username):
        # Emails are case-insensitive logins: look up the stored lower-case form.
        return self.get(email=self.normalize_email(username))

    @classmethod
    def normalize_email(cls, email):
        return (email or "").strip().lower()

    def create_user(self, email, password=None, *, name="", role=Role.NODE, **extra):
        user = self.model(email=self.normalize_email(email), name=name, role=role, **extra)
        user.set_password(password)
        user.full_clean(exclude=["password"])
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
    email = models.EmailField(unique=True, max_length=254)
    name = models.CharField(max_length=150)
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.NODE)
    is_active = models.BooleanField(
        default=True, help_text="Deactivated users cannot log in; their tokens stop working."
    )
    date_joined = models.DateTimeField(default=timezone.now, editable=False)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["name"]

    class Meta:
        ordering = ["name", "email"]
        indexes = [models.Index(fields=["is_active", "name"], name="user_active_name")]

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
