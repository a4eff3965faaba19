"""The heartbeat on the hot path (taskmgmt.hot_paths): NodeViewSet.heartbeat's checks
and answer, without the request plumbing around them."""

from django.utils import timezone

from accounts.permissions import IsNodeRole
from nodes import heartbeats
from nodes.serving import note_answer
from nodes.views import heartbeat_answer, held_task_ids
from taskmgmt import hot_paths
from taskmgmt.throttling import ApiRateThrottle, counts_in_default_cache, note_count


def beat_and_count(request) -> None:
    """The beat and the API's rate count in one Redis script, where both are kept in
    Redis: two round trips were a share of every beat (docs/performance.md). Run before
    the rate count, after the body is checked: a beat DRF would refuse with a 400 is not
    stamped here. A beat over its limit is stamped, as NodeViewSet.throttled stamps it."""
    request.held = held_task_ids(request.data)
    if not (heartbeats.coalesced() and counts_in_default_cache()):
        return  # the handler beats and the throttle counts, as in Django's path
    window = ApiRateThrottle().window_for(request)
    if window is None:
        return
    now = timezone.now()
    count = heartbeats.record_counted(
        node_id=request.user.pk, now=now, count_key=window.cache_key, timeout=window.timeout
    )
    request.beaten_at = now
    if count is not None:  # None: Redis is down, and the throttle says so as usual
        note_count(request, window, count)


def heartbeat(request, match) -> dict:
    beaten_at = getattr(request, "beaten_at", None)
    return heartbeat_answer(request.user, request.held, beaten_at=beaten_at)


def register_all() -> None:
    hot_paths.register(
        "POST",
        r"/api/nodes/heartbeat",
        heartbeat,
        permission=IsNodeRole,
        allow="POST, OPTIONS",
        example="/api/nodes/heartbeat",
        before_count=beat_and_count,
    )
    hot_paths.after_answer(note_answer)
