import unicodedata
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Case, Value, When
from django.utils import timezone


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    NODE = "node", "Node"


class Liveness(models.TextChoices):
    """What a node's last heartbeat says about it now (SPEC, Nodes)."""

    ALIVE = "alive", "Alive"
    STALE = "stale", "Stale"
    DOWN = "down", "Down"
    NEVER_SEEN = "never_seen", "Never seen"


class ServingRecord(models.Model):
    """When the API last answered a request, and since when without a break: one row.

    Written by every app process at most once a second (accounts.serving); liveness
    counts a node's silence only while the API was serving (SPEC, Nodes), so an
    outage of the API or the database is never taken for the nodes' deaths.
    """

    ROW = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=ROW, editable=False)
    serving_since = models.DateTimeField()
    last_serving = models.DateTimeField()
    # The last answer before serving_since: the previous outage ran from here to there.
    outage_began = models.DateTimeField(null=True)

    def __str__(self):
        return f"serving since {self.serving_since:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def current(cls) -> "ServingRecord | None":
        return cls.objects.filter(pk=cls.ROW).first()


# A node down longer than this many NODE_DOWN_AFTER no longer counts as recently alive.
RECENT_DOWN_INTERVALS = 3


def serving_gap() -> timedelta:
    """No answer for this long is an outage: an alive node beats every interval, and each
    app process records at most once a second. Kept short: an outage shorter than this
    counts as silence, which the failover's down-share guard is there for."""
    return timedelta(seconds=max(settings.NODE_HEARTBEAT_SECONDS, 1) + 1)


def silence_cutoff(silence: timedelta, now: datetime, record: ServingRecord | None) -> datetime:
    """The `last_seen` before which a node has been silent for longer than `silence`,
    counting only the time the API was serving: up to its last recorded answer, over
    its current stretch and the one before the last outage (`record` None: none known,
    all time counts)."""
    if record is None:
        return now - silence
    # Past the last recorded answer, nobody knows whether a beat could have landed.
    cutoff = min(now, record.last_serving) - silence
    if cutoff >= record.serving_since or record.outage_began is None:
        return cutoff
    return cutoff - (record.serving_since - record.outage_began)


def liveness_cutoffs(now: datetime) -> tuple[datetime, datetime]:
    """(stale_before, down_before): a node last seen before these is stale, or down.

    The one definition of liveness, used by the queryset and by single users.
    Stale once a beat is missed (1.5 intervals, so a late beat is not a miss);
    down after NODE_DOWN_AFTER seconds; both count only time the API was serving,
    so after an outage every node has its full intervals to beat again.
    """
    record = ServingRecord.current()
    stale = timedelta(seconds=settings.NODE_HEARTBEAT_SECONDS * 1.5)
    down = timedelta(seconds=settings.NODE_DOWN_AFTER)
    return silence_cutoff(stale, now, record), silence_cutoff(down, now, record)


def liveness_of(last_seen: datetime | None, now: datetime) -> str:
    if last_seen is None:
        return Liveness.NEVER_SEEN
    stale_before, down_before = liveness_cutoffs(now)
    if last_seen < down_before:
        return Liveness.DOWN
    if last_seen < stale_before:
        return Liveness.STALE
    return Liveness.ALIVE


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

    def with_liveness(self, now: datetime | None = None):
        """Annotates `liveness` (a `Liveness` value), derived from `last_seen` at `now`."""
        stale_before, down_before = liveness_cutoffs(now or timezone.now())
        return self.annotate(
            liveness=Case(
                When(last_seen__isnull=True, then=Value(Liveness.NEVER_SEEN)),
                When(last_seen__lt=down_before, then=Value(Liveness.DOWN)),
                When(last_seen__lt=stale_before, then=Value(Liveness.STALE)),
                default=Value(Liveness.ALIVE),
                output_field=models.CharField(),
            )
        )

    def down(self, now: datetime | None = None):
        """Nodes seen once and not since NODE_DOWN_AFTER (a never-seen node is not down:
        it may be a client that does not beat)."""
        _, down_before = liveness_cutoffs(now or timezone.now())
        return self.nodes().filter(last_seen__lt=down_before)

    def recently_seen(self, now: datetime | None = None):
        """Nodes seen within the last RECENT_DOWN_INTERVALS down-intervals (of serving
        time): the fleet against which the failover guard weighs the down ones."""
        now = now or timezone.now()
        silence = timedelta(seconds=settings.NODE_DOWN_AFTER * RECENT_DOWN_INTERVALS)
        cutoff = silence_cutoff(silence, now, ServingRecord.current())
        return self.nodes().filter(last_seen__gte=cutoff)

    def alive(self, now: datetime | None = None):
        stale_before, _ = liveness_cutoffs(now or timezone.now())
        return self.nodes().filter(last_seen__gte=stale_before, is_active=True)


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
    # Stamped by the server's clock on each heartbeat or claim; liveness derives from it.
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

    def liveness(self, now: datetime | None = None) -> str:
        return liveness_of(self.last_seen, now or timezone.now())

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
