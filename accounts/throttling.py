"""The login limits: one budget per client IP and one per account, for every password check.

The API login, the admin site's login, and the old password of update-password
and of the admin site's password change all count here, with the same cache keys,
so none is a way around the others.
"""

from rest_framework.throttling import BaseThrottle

from accounts.models import EMAIL_MAX_LENGTH, User, UserManager
from taskmgmt.throttling import RatelimitThrottle


def account_key(username: str) -> str:
    """The account `username` logs into (its pk), or its canonical form when none:
    every spelling that reaches one account shares its budget."""
    if len(username) > EMAIL_MAX_LENGTH:
        # No account has such a name, and the login refuses it unchecked; one shared
        # count spares normalizing it (README, "What an anonymous request can cost").
        return "name:too-long"
    user = User.objects.get_for_login(username)
    if user is not None:
        return f"user:{user.pk}"
    # Lone surrogates are valid JSON but cannot be encoded into a cache key.
    canonical = UserManager.normalize_email(username)
    return "name:" + canonical.encode("utf-8", "backslashreplace").decode()


def body_username(request) -> str:
    data = request.data
    username = data.get("username") if isinstance(data, dict) else None
    return username if isinstance(username, str) else ""


class PasswordCheckThrottle(RatelimitThrottle):
    """Counts only what checks a password: on an API view, a method its action handles.

    DRF runs throttles before it refuses a method, so an OPTIONS, a HEAD or a PUT on the
    login would otherwise spend the login budgets (and end in 429 instead of its answer).
    """

    def allow_request(self, request, view):
        if view is not None and request.method.lower() not in getattr(view, "action_map", {}):
            return True
        return super().allow_request(request, view)


class LoginIpThrottle(PasswordCheckThrottle):
    group = "login-ip"
    rate_setting = "RATELIMIT_LOGIN_IP"
    key = "ip"


class LoginAccountThrottle(PasswordCheckThrottle):
    """Caps password guessing on one account, whatever the IPs or spellings used.

    The account is the `username` given (the admin's login form), else the
    signed-in user (update-password), else the JSON body's (the API login).
    """

    group = "login-account"
    rate_setting = "RATELIMIT_LOGIN_USER"

    def __init__(self, username: str | None = None):
        self.username = username

    def get_key(self, request):
        user = getattr(request, "user", None)
        if self.username is not None:
            value = account_key(self.username)
        elif user is not None and user.is_authenticated:
            value = f"user:{user.pk}"
        else:
            value = account_key(body_username(request))
        return lambda group, request: value


def login_allowed(request, username: str | None = None) -> bool:
    """Counts one password check outside DRF against both budgets: the admin's login
    (for `username`) and its password change (for the signed-in user)."""
    throttles: list[BaseThrottle] = [LoginIpThrottle(), LoginAccountThrottle(username)]
    # Stops at the first refusal, as the API's views do (FirstRefusalThrottling).
    return all(throttle.allow_request(request, None) for throttle in throttles)
