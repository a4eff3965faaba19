"""The domain's state for /metrics, read from the database at scrape time.

It reuses the dashboard's snapshot (the same grouped queries, cached for
DASHBOARD_CACHE_SECONDS), so a scrape and a dashboard refresh share one set of
queries, and every worker answers the same. Nodes are labelled by id: a bounded,
admin-created set, stable across renames and free of emails; `taskmgmt_node_info`
maps each id to the node's name for dashboards.
"""

from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from nodes.models import Liveness, nodes_by_state
from taskmgmt.replica import on_replica
from tasks.dashboard import snapshot
from tasks.models import OPEN_STATUSES, TaskStatus
from tasks.selectors import cancel_requests_waiting, sweep_totals


class DomainCollector:
    def collect(self):
        data = snapshot()
        open_tasks = GaugeMetricFamily(
            "taskmgmt_tasks_open", "Active open tasks now, by status.", labels=["status"]
        )
        finished = GaugeMetricFamily(
            "taskmgmt_tasks_finished_recently",
            "Tasks that reached completed, failed or cancelled in the dashboard's 24 h window"
            " (and are still there), by status.",
            labels=["status"],
        )
        for status in TaskStatus.values:
            family = open_tasks if status in OPEN_STATUSES else finished
            family.add_metric([status], data["totals"][status])
        yield open_tasks
        yield finished
        yield GaugeMetricFamily(
            "taskmgmt_tasks_overdue",
            "Open (pending or in_progress) tasks past their deadline: the sweep's next work.",
            value=data["overdue"],
        )
        recent = GaugeMetricFamily(
            "taskmgmt_tasks_failed_recently",
            "Tasks that failed in the dashboard's 24 h window and are still failed, by cause.",
            labels=["cause"],
        )
        for cause, count in sorted(data["failures"].items()):
            recent.add_metric([cause], count)
        yield recent
        waiting, oldest = cancel_requests_waiting(timezone.now())
        yield GaugeMetricFamily(
            "taskmgmt_cancel_requests_waiting",
            "In-progress tasks whose cancel request their node has not acknowledged yet.",
            value=waiting,
        )
        yield GaugeMetricFamily(
            "taskmgmt_cancel_request_oldest_age_seconds",
            "Age of the oldest unacknowledged cancel request (0 when none waits).",
            value=oldest or 0,
        )

        active_nodes = [node for node in data["nodes"] if node["is_active"]]
        by_liveness = GaugeMetricFamily(
            "taskmgmt_nodes", "Active node accounts, by liveness.", labels=["liveness"]
        )
        for liveness in Liveness.values:
            by_liveness.add_metric(
                [liveness], sum(node["liveness"] == liveness for node in active_nodes)
            )
        yield by_liveness
        by_state = GaugeMetricFamily(
            "taskmgmt_nodes_by_schedule",
            "Active node accounts, by scheduling state (schedulable, cordoned, draining).",
            labels=["state"],
        )
        for state, count in nodes_by_state().items():
            by_state.add_metric([state], count)
        yield by_state
        ages = GaugeMetricFamily(
            "taskmgmt_node_heartbeat_age_seconds",
            "Seconds since each active node's last heartbeat (never-seen nodes have none).",
            labels=["node_id"],
        )
        info = GaugeMetricFamily(
            "taskmgmt_node_info",
            "1 for each active node: its id and name.",
            labels=["node_id", "name"],
        )
        for node in active_nodes:
            info.add_metric([str(node["id"]), node["name"]], 1)
            if node["heartbeat_age"] is not None:
                ages.add_metric([str(node["id"])], node["heartbeat_age"])
        yield ages
        yield info

        yield GaugeMetricFamily(
            "taskmgmt_cache_up",
            "1 if the shared cache (Redis) answered this scrape, 0 if not: then rate limits"
            " fail as docs/security.md says and these figures come from the database.",
            value=int(data["cache_up"]),
        )
        yield from self._sweep(data["last_sweep"])

    def _sweep(self, last):
        totals = on_replica(sweep_totals)
        yield CounterMetricFamily(
            "taskmgmt_sweep_runs", "Runs of the sweep (kept in the database).", value=totals["runs"]
        )
        yield CounterMetricFamily(
            "taskmgmt_sweep_failed_tasks",
            "Tasks the sweep has failed, over every run.",
            value=totals["failed"] or 0,
        )
        yield CounterMetricFamily(
            "taskmgmt_sweep_reassigned_tasks",
            "Tasks the sweep's failover has reassigned, over every run.",
            value=totals["reassigned"] or 0,
        )
        yield CounterMetricFamily(
            "taskmgmt_sweep_cancelled_tasks",
            "Tasks the sweep has cancelled (their cancel request went unanswered for"
            " CANCEL_GRACE_SECONDS), over every run.",
            value=totals["cancelled"] or 0,
        )
        yield CounterMetricFamily(
            "taskmgmt_sweep_failover_held",
            "Sweep runs that failed nobody over because more than FAILOVER_MAX_DOWN_SHARE of"
            " the recently alive nodes were down at once.",
            value=totals["held"],
        )
        if last:
            yield GaugeMetricFamily(
                "taskmgmt_sweep_last_run_timestamp_seconds",
                "When the last sweep started (Unix time).",
                value=last["started_at"].timestamp(),
            )
            yield GaugeMetricFamily(
                "taskmgmt_sweep_last_duration_seconds",
                "How long the last sweep took.",
                value=last["duration"],
            )
