"""A node's work as the nodes app shows it (nodes.work.NodeWork): the heartbeat's
answer, the node list's counts, and the node page's task panels and reassign.

Registered by tasks.apps, so nodes shows task data without importing tasks.
"""

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect

from nodes.work import NodeWork
from taskmgmt.replica import on_replica
from tasks.changelist_links import changelist_url, status_url
from tasks.dashboard import WINDOW_HOURS
from tasks.forms import ReassignForm
from tasks.models import OPEN_STATUSES, Task, TaskStatus
from tasks.selectors import (
    node_finished_counts,
    node_history,
    node_open_task_ids,
    node_status_counts,
)
from tasks.services import tasks_drain_pending, tasks_reassign

HISTORY_ROWS = 20


class TaskWork(NodeWork):
    def open_counts_by_node(self):
        return Task.objects.open_counts_by_node()

    def in_progress_of(self, node, task_ids):
        return Task.objects.in_progress_of(node, task_ids)

    def drain(self, node_id, now):
        return tasks_drain_pending(node_id=node_id, now=now)

    def heartbeat_facts(self, node, now):
        return Task.objects.heartbeat_facts(node, now)

    def claimable_count(self, node, now):
        return Task.objects.claimable_count(node, now)

    def node_page(self, request, node, now):
        form = ReassignForm(request.POST or None, source=node)
        if request.method == "POST" and form.is_valid():
            try:
                moved = tasks_reassign(
                    task_ids=node_open_task_ids(node),
                    node=form.cleaned_data["node"],
                    locked_at=form.cleaned_data["locked_at"],
                )
            except ValidationError as error:
                messages.error(request, "; ".join(error.messages))
            else:
                messages.success(
                    request, f"Reassigned {len(moved)} open task(s) to {form.cleaned_data['node']}."
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
        done = sum(finished.values())
        return {
            "statuses": [
                (status, label, counts.get(status, 0), status_url(status, node.pk))
                for status, label in TaskStatus.choices
            ],
            "open_count": sum(counts.get(status, 0) for status in OPEN_STATUSES),
            "finished": finished,
            "failure_rate": (finished.get(TaskStatus.FAILED, 0) / done) if done else None,
            "failed_url": changelist_url(
                assigned_node__id__exact=str(node.pk),
                status__exact=TaskStatus.FAILED,
                updated_at__gte=since.isoformat(),
            ),
            "history": history,
            "form": form,
        }
