"""Links from the dashboard and the node page: every number opens the task
changelist filtered to exactly those tasks."""

from datetime import datetime
from urllib.parse import urlencode

from django.urls import reverse

from tasks.dashboard import NO_CAUSE
from tasks.models import TaskStatus
from tasks.selectors import FINAL_STATUSES


def changelist_url(**filters) -> str:
    """The task changelist with these lookups, which the admin accepts on local fields."""
    query = {"active__exact": "1", **filters}
    return f"{reverse('admin:tasks_task_changelist')}?{urlencode(query)}"


def status_url(
    status: str, node_id=None, since: datetime | None = None, node_label: str | None = None
) -> str:
    """Open statuses as they are now; finished ones since `since` (the dashboard's window).
    `node_label`: tasks of nodes with that label (`key=value`; `!key`: without the key)."""
    node = {"assigned_node__id__exact": str(node_id)} if node_id else {}
    if node_label is not None:
        node["node_label"] = node_label
    window = {"updated_at__gte": since.isoformat()} if since and status in FINAL_STATUSES else {}
    return changelist_url(**node, status__exact=status, **window)


def failures_url(cause: str, since: datetime, until: datetime | None = None) -> str:
    window = {"updated_at__gte": since.isoformat()}
    if until:
        window["updated_at__lt"] = until.isoformat()
    return changelist_url(
        status__exact=TaskStatus.FAILED,
        failure_cause__exact="" if cause == NO_CAUSE else cause,
        **window,
    )
