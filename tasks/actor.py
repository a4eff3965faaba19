"""Who is acting right now, so history rows can name them.

Requests set it through `ActorMiddleware`; scripts and tests use
`acting_as(user)`. Nothing set means the system acts (the sweep, a shell).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_actor_source: ContextVar[Callable[[], object] | None] = ContextVar("actor_source", default=None)


def current_actor():
    """The authenticated user acting now, or None for the system."""
    source = _actor_source.get()
    user = source() if source else None
    return user if getattr(user, "is_authenticated", False) else None


@contextmanager
def acting_as(user) -> Iterator[None]:
    token = _actor_source.set(lambda: user)
    try:
        yield
    finally:
        _actor_source.reset(token)


class ActorMiddleware:
    """Reads `request.user` when a history row is written, not before.

    DRF authenticates the JWT inside the view and then sets `request.user`
    on the underlying Django request, so a lazy read sees the API user as
    well as the admin site's session user.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _actor_source.set(lambda: getattr(request, "user", None))
        try:
            return self.get_response(request)
        finally:
            _actor_source.reset(token)
