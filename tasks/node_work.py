"""A node's work as the nodes app shows it (nodes.work.NodeWork): the heartbeat's
answer, the node list's counts, and the node page's task panels and reassign.

Registered by tasks.apps, so nodes shows task data without importing tasks.
"""

from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.urls import reverse

from accounts.models import User
from nodes.models import Node
from nodes.node_page import confirmation
from nodes.work import NodeWork
from taskmgmt.replica import on_replica
from tasks.changelist_links import changelist_url, status_url
from tasks.dashboard import WINDOW_HOURS, backlog_seconds
from tasks.forms import ReassignForm, deadline_outcome, deadline_plan, no_schedulable_node
from tasks.models import OPEN_STATUSES, Task, TaskStatus
from tasks.selectors import (
    node_finished_counts,
    node_history,
    node_moved_away,
    node_open_task_ids,
    node_status_counts,
    reassign_preview,
)
from tasks.services import tasks_drain_pending, tasks_drain_preview, tasks_reassign

HISTORY_ROWS = 20
SYSTEM = "the sweep"


class TaskWork(NodeWork):
    def open_counts_by_node(self):
        return Task.objects.open_counts_by_node()

    def in_progress_of(self, node, task_ids):
        return Task.objects.in_progress_of(node, task_ids)

    def drain(self, node_id, now):
        return tasks_drain_pending(node_id=node_id, now=now)

    def drain_preview(self, node_id, now):
        return tasks_drain_preview(node_id=node_id, now=now)

    def heartbeat_facts(self, node, now):
        return Task.objects.heartbeat_facts(node, now)

    def heartbeat_facts_read(self, node_id, now):
        return Task.objects.heartbeat_facts_read(node_id, now)

    def heartbeat_facts_from(self, rows):
        return Task.objects.heartbeat_facts_from(rows)

    def claimable_count(self, node, now):
        return Task.objects.claimable_count(node, now)

    def node_page(self, request, node, now):
        # Bound only to its own POST: another form's errors must not show here too.
        posted = request.method == "POST" and request.POST.get("action") == "reassign"
        form = ReassignForm(request.POST if posted else None, source=node)
        if posted and form.is_valid():
            if request.POST.get("confirm") != "yes":
                return reassign_confirmation(request, node, form, now)
            target, locked_at = form.cleaned_data["node"], form.cleaned_data["locked_at"]
            try:
                moved = tasks_reassign(
                    task_ids=node_open_task_ids(node),
                    node=target,
                    locked_at=locked_at,
                    from_node=node,
                )
            except ValidationError as error:
                messages.error(request, "; ".join(error.messages))
            else:
                messages.success(
                    request,
                    f"Reassigned {len(moved)} open task(s) from {node} to {target}, back to "
                    f"pending. {deadline_outcome(moved, locked_at)}",
                )
                return redirect("admin:node", node_id=node.pk)
        since = now - timedelta(hours=WINDOW_HOURS)
        # The panels are the page's heavy reads: from the replica when there is one,
        # so they may trail a reassign just made here by the replica's lag.
        counts, finished, history = on_replica(
            lambda using: (
                node_status_counts(node, using),
                node_finished_counts(node, since, using),
                node_history(node, HISTORY_ROWS, using),
            )
        )
        # The failure rate is over the work that ran to an end: a cancelled task
        # neither completed nor failed, and is shown apart.
        done = finished.get(TaskStatus.COMPLETED, 0) + finished.get(TaskStatus.FAILED, 0)
        open_count = sum(counts.get(status, 0) for status in OPEN_STATUSES)
        last_hour = node_finished_counts(node, now - timedelta(hours=1)).get(
            TaskStatus.COMPLETED, 0
        )
        return {
            "completed_last_hour": last_hour,
            "in_progress_count": counts.get(TaskStatus.IN_PROGRESS, 0),
            "backlog": backlog_seconds(open_count, last_hour),
            "statuses": [
                (status, label, counts.get(status, 0), status_url(status, node.pk))
                for status, label in TaskStatus.choices
            ],
            "open_count": open_count,
            "finished": finished,
            "failure_rate": (finished.get(TaskStatus.FAILED, 0) / done) if done else None,
            "failed_url": changelist_url(
                assigned_node__id__exact=str(node.pk),
                status__exact=TaskStatus.FAILED,
                updated_at__gte=since.isoformat(),
            ),
            "cancelled_url": changelist_url(
                assigned_node__id__exact=str(node.pk),
                status__exact=TaskStatus.CANCELLED,
                updated_at__gte=since.isoformat(),
            ),
            "history": history,
            "moved_away": moved_away(node),
            "activity_url": f"{reverse('admin:activity')}?{urlencode({'node': node.pk})}",
            "form": form,
            "no_reassign_target": no_reassign_target(node, form, open_count),
        }


NOTHING_OPEN = "There is nothing to move: it has no open tasks."


def no_reassign_target(node, form, open_count: int) -> str:
    """Why the reassign offers no node to move to ("" when it offers one): its list is
    the other schedulable nodes only, and an empty select said nothing."""
    if form.fields["node"].queryset.exists():
        return ""
    if not open_count:  # nothing to move: no advice on where to move it
        return NOTHING_OPEN
    if Node.objects.filter(is_active=True).exclude(pk=node.pk).exists():
        return no_schedulable_node(other=True)
    return "There is no other active node to move its tasks to."


def moved_away(node) -> list[dict]:
    """Its tasks given to another node, newest first, with who moved them and where to:
    two queries (the rows, then the nodes they went to)."""
    rows = list(node_moved_away(node, HISTORY_ROWS))
    targets = {row.to_value for row in rows if row.to_value}
    users = (
        {
            str(user.pk): user
            for user in User.objects.filter(pk__in=targets).only("id", "name", "email")
        }
        if targets
        else {}
    )
    names = {pk: user.name or user.email for pk, user in users.items()}
    return [
        {
            "created_at": row.created_at,
            "task_id": row.task_id,
            "task_name": row.task.name,
            "to": names.get(row.to_value, row.to_value),
            "to_title": str(users.get(row.to_value, row.to_value)),
            "to_url": reverse("admin:node", args=[row.to_value]) if row.to_value in names else "",
            "by": SYSTEM
            if row.performed_by is None
            else row.performed_by.name or row.performed_by.email,
            "by_title": "" if row.performed_by is None else str(row.performed_by),
            "cause": row.get_cause_display(),
        }
        for row in rows
    ]


def reassign_confirmation(request, node, form, now):
    """How many of the node's tasks move where, and what happens to their deadlines."""
    target, locked_at = form.cleaned_data["node"], form.cleaned_data["locked_at"]
    preview = reassign_preview(Task.objects.filter(pk__in=node_open_task_ids(node)), now)
    return confirmation(
        admin.site,
        request,
        node,
        title=f"Reassign {preview['moving']} open task(s) from {node} to {target}?",
        changes=[
            f"{preview['moving']} open task(s) move from {node} to {target} and go back to "
            f"pending; {preview['in_progress']} of them are in progress on {node}, which "
            "stops working on them.",
            deadline_plan(preview, locked_at),
            "Each move is written to the task's history, with you as its author.",
        ],
        hidden=[
            ("action", "reassign"),
            ("node", target.pk),
            ("locked_at", form.data.get("locked_at", "")),
        ],
        submit=f"Yes, reassign {preview['moving']} task(s)",
    )
