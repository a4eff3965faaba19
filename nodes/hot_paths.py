"""The heartbeat on the hot path (taskmgmt.hot_paths): NodeViewSet.heartbeat's checks
and answer, without the request plumbing around them."""

from django.utils import timezone

from accounts.permissions import IsNodeRole
from nodes import heartbeats
from nodes.serving import note_answer
from nodes.views import heartbeat_answer, held_task_ids
from nodes.work import node_work
from taskmgmt import hot_paths
from taskmgmt.throttling import ApiRateThrottle, counts_in_default_cache, note_count


def facts_with_user(request, match, user_id):
    """The heartbeat's facts, read in one round trip with the caller's user (at the
    moment the beat is then stamped with), where the work has a statement for them."""
    request.now = timezone.now()
    return node_work().heartbeat_facts_read(user_id, request.now)


def beat_and_count(request) -> None:
    """The beat and the API's rate count in one Redis script, where both are kept in
    Redis: two round trips were a share of every beat (docs/performance.md). Run before
    the rate count, after the body is checked: a beat DRF would refuse with a 400 is not
    stamped here. A beat over its limit is stamped, as NodeViewSet.throttled stamps it."""
    request.held = held_task_ids(request.data)
    if not hasattr(request, "now"):  # the facts were not read with the user
        request.now = timezone.now()
    if not (heartbeats.coalesced() and counts_in_default_cache()):
        return  # the handler beats and the throttle counts, as in Django's path
    window = ApiRateThrottle().window_for(request)
    if window is None:
        return
    count = heartbeats.record_counted(
        node_id=request.user.pk, now=request.now, count_key=window.cache_key, timeout=window.timeout
    )
    request.beaten = True
    if count is not None:  # None: Redis is down, and the throttle says so as usual
        note_count(request, window, count)


def heartbeat(request, match) -> dict:
    rows = request.read_with_user
    return heartbeat_answer(
        request.user,
        request.held,
        now=request.now,
        beaten=getattr(request, "beaten", False),
        facts=None if rows is None else node_work().heartbeat_facts_from(rows),
    )


def register_all() -> None:
    hot_paths.register(
        "POST",
        r"/api/nodes/heartbeat",
        heartbeat,
        permission=IsNodeRole,
        allow="POST, OPTIONS",
        example="/api/nodes/heartbeat",
        before_count=beat_and_count,
        read_with_user=facts_with_user,
    )
    hot_paths.after_answer(note_answer)
