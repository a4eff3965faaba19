"""The heartbeat on the hot path (taskmgmt.hot_paths): NodeViewSet.heartbeat's checks
and answer, without the request plumbing around them."""

from accounts.permissions import IsNodeRole
from nodes.serving import note_answer
from nodes.views import heartbeat_answer, held_task_ids
from taskmgmt import hot_paths


def heartbeat(request, match) -> dict:
    return heartbeat_answer(request.user, held_task_ids(request.data))


def register_all() -> None:
    hot_paths.register(
        "POST",
        r"/api/nodes/heartbeat",
        heartbeat,
        permission=IsNodeRole,
        allow="POST, OPTIONS",
        example="/api/nodes/heartbeat",
    )
    hot_paths.after_answer(note_answer)
