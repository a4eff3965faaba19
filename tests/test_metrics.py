"""/metrics: who may read it, and that its numbers are the database's and the events'.

Scraped over real HTTP (the test client, real JWTs for the API calls) and parsed with
prometheus_client's own parser. Counters are process-wide, so the tests compare deltas.
"""

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import User
from nodes.models import Liveness
from tasks.models import Task
from tests.factories import PASSWORD, NodeFactory, TaskFactory
from tests.redis_server import redis_cache, unreachable_redis_url

TOKEN = "scrape-me-0123456789abcdef"


def scrape(client, token=TOKEN) -> dict:
    """{(sample name, frozenset of labels): value} from one authorised scrape."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, metric: str, /, **labels) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.DASHBOARD_CACHE_SECONDS = 0


@pytest.mark.django_db
def test_metrics_are_off_unless_configured(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 404
    assert b"taskmgmt_" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong-token",
        f"Basic {TOKEN}",
        "Bearer",
        # Non-ASCII bytes reach WSGI as latin-1 text, which compare_digest refused (a 500).
        "Bearer \xe9\xe9",
        f"Bearer {TOKEN}\xe9",
    ],
)
def test_without_the_token_a_401_and_no_metrics(client, metrics_token, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["title"] == "Unauthorized"
    assert b"taskmgmt_" not in response.content and b"# HELP" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("networks", "token", "header", "expected"),
    [
        (["10.0.0.0/8"], "", None, 403),
        (["127.0.0.0/8"], "", None, 200),
        (["10.0.0.0/8", "127.0.0.1/32"], "", None, 200),
        (["127.0.0.0/8"], TOKEN, None, 401),  # both set: both must hold
        (["10.0.0.0/8"], TOKEN, f"Bearer {TOKEN}", 403),
        (["127.0.0.0/8"], TOKEN, f"Bearer {TOKEN}", 200),
    ],
)
def test_allowed_networks_alone_or_with_the_token(
    client, settings, networks, token, header, expected
):
    settings.METRICS_ALLOWED_NETWORKS, settings.METRICS_TOKEN = networks, token
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/metrics", **extra)  # the test client comes from 127.0.0.1
    assert response.status_code == expected
    assert (b"taskmgmt_tasks_open" in response.content) == (expected == 200)


@pytest.mark.django_db(transaction=True)  # events are counted when their transaction commits
def test_scrape_matches_the_database_after_a_known_sequence_of_api_calls(
    client, metrics_token, admin_client, client_for, anon_client
):
    node, other = NodeFactory(last_seen=timezone.now()), NodeFactory()
    User.objects.filter(pk=other.pk).update(last_seen=timezone.now() - timedelta(minutes=5))
    before = scrape(client)
    node_client = client_for(node)
    deadline = (timezone.now() + timedelta(hours=2)).isoformat()

    ids = []
    for i in range(3):
        body = {"taskName": f"job {i}", "taskDetails": "d", "assignedNode": str(node.pk)}
        response = admin_client.post("/api/tasks", body | {"lockedAt": deadline})
        assert response.status_code == 201
        ids.append(response.json()["task"]["id"])
    for task_id, status in [
        (ids[0], "in_progress"),
        (ids[0], "completed"),
        (ids[1], "in_progress"),
        (ids[1], "failed"),
    ]:
        response = node_client.put(
            "/api/tasks/shift-status", {"taskId": task_id, "taskStatus": status}
        )
        assert response.status_code == 200
    response = admin_client.put(
        "/api/tasks/assign", {"taskId": ids[1], "nodeId": str(other.pk), "lockedAt": deadline}
    )
    assert response.status_code == 200
    login = anon_client.post("/api/auth/login", {"username": node.email, "password": "wrong"})
    assert login.status_code == 401
    # A task past its deadline, for the overdue gauge.
    overdue = TaskFactory(assigned_node=node)
    Task.objects.filter(pk=overdue.pk).update(locked_at=timezone.now() - timedelta(minutes=1))

    after = scrape(client)

    def delta(metric, /, **labels):
        return value(after, metric, **labels) - value(before, metric, **labels)

    for status in ("pending", "in_progress"):
        expected = Task.objects.filter(active=True, status=status).count()
        assert value(after, "taskmgmt_tasks_open", status=status) == expected
    for status in ("completed", "failed"):  # all of today's
        expected = Task.objects.filter(active=True, status=status).count()
        assert value(after, "taskmgmt_tasks_finished_recently", status=status) == expected
    assert value(after, "taskmgmt_tasks_open", status="pending") == 3  # job 1 again, 2, overdue
    assert value(after, "taskmgmt_tasks_finished_recently", status="completed") == 1
    assert value(after, "taskmgmt_tasks_overdue") == 1
    assert delta("taskmgmt_task_claim_latency_seconds_count") == 2
    assert delta("taskmgmt_task_failures_total", cause="node_reported") == 1
    assert delta("taskmgmt_task_reassignments_total", kind="manual") == 1
    assert delta("taskmgmt_login_failures_total", via="api", reason="wrong_password") == 1
    assert (
        delta("taskmgmt_http_requests_total", method="PUT", view="task-shift-status", status="200")
        == 4
    )
    assert delta("taskmgmt_http_requests_total", method="POST", view="task-list", status="201") == 3
    assert (
        delta("taskmgmt_http_request_duration_seconds_count", view="task-list", status="201") == 3
    )
    assert value(after, "taskmgmt_nodes", liveness=Liveness.ALIVE) == 1
    assert value(after, "taskmgmt_nodes", liveness=Liveness.DOWN) == 1
    age = value(after, "taskmgmt_node_heartbeat_age_seconds", node_id=str(other.pk))
    assert 300 <= age < 330
    assert value(after, "taskmgmt_node_info", node_id=str(node.pk), name=node.name) == 1

    # Bounded labels: no emails, no task ids anywhere.
    labels = " ".join(v for _, pairs in after for _, v in pairs)
    assert "@" not in labels
    assert not any(task_id in labels for task_id in ids)


@pytest.mark.django_db
def test_admin_site_login_failures_are_counted(client, metrics_token, admin_user):
    before = scrape(client)
    response = client.post(
        "/admin/login/", {"username": admin_user.email, "password": PASSWORD + "x"}
    )
    assert response.status_code == 200  # the form again, with its error
    after = scrape(client)
    name, labels = "taskmgmt_login_failures_total", {"via": "admin_site", "reason": "invalid_login"}
    assert value(after, name, **labels) - value(before, name, **labels) == 1


@pytest.mark.django_db
def test_sweep_runs_come_from_the_database(client, metrics_token):
    from tasks.models import SweepRun, SweepTotals

    now = timezone.now()
    for seconds, failed in [(0.5, 3), (1.5, 4)]:
        SweepRun.objects.create(
            started_at=now - timedelta(minutes=failed),
            finished_at=now - timedelta(minutes=failed) + timedelta(seconds=seconds),
            failed_count=failed,
        )
    # What tasks.services.sweep_run adds with each run (tests/tasks/test_sweep_totals.py).
    SweepTotals.objects.update_or_create(pk=SweepTotals.ROW, defaults={"runs": 2, "failed": 7})
    samples = scrape(client)
    assert value(samples, "taskmgmt_sweep_runs_total") == 2
    assert value(samples, "taskmgmt_sweep_failed_tasks_total") == 7
    latest = SweepRun.objects.order_by("-started_at").first()
    assert (
        value(samples, "taskmgmt_sweep_last_run_timestamp_seconds") == latest.started_at.timestamp()
    )
    assert value(samples, "taskmgmt_sweep_last_duration_seconds") == pytest.approx(0.5)
    assert re.fullmatch(r"\d+(\.\d+)?", str(value(samples, "taskmgmt_sweep_runs_total")))


@pytest.mark.django_db(transaction=True)
def test_failures_by_the_sweep_endpoint_are_counted_by_cause(client, metrics_token, admin_client):
    overdue = TaskFactory.create_batch(2)
    Task.objects.filter(pk__in=[t.pk for t in overdue]).update(
        locked_at=timezone.now() - timedelta(minutes=1)
    )
    before = scrape(client)
    assert value(before, "taskmgmt_tasks_overdue") == 2

    assert admin_client.post("/cron/collect-failed").json() == {"failedCount": 2}

    after = scrape(client)
    name, labels = "taskmgmt_task_failures_total", {"cause": "deadline"}
    assert value(after, name, **labels) - value(before, name, **labels) == 2
    assert value(after, "taskmgmt_tasks_overdue") == 0
    assert value(after, "taskmgmt_tasks_failed_recently", cause="deadline") == 2


@pytest.mark.django_db(transaction=True)
def test_claims_and_failover_reassignments_are_counted(client, metrics_token, settings, client_for):
    """A claim through the API observes the claim latency; failover counts its moves."""
    settings.FAILOVER = "reassign"
    lost, alive = NodeFactory(), NodeFactory(last_seen=timezone.now())
    TaskFactory(assigned_node=alive)
    User.objects.filter(pk=lost.pk).update(last_seen=timezone.now() - timedelta(hours=1))
    TaskFactory.create_batch(2, assigned_node=lost)
    before = scrape(client)

    assert client_for(alive).post("/api/tasks/claim").status_code == 200
    call_command("collect_failed", verbosity=0)

    after = scrape(client)
    claims = value(after, "taskmgmt_task_claim_latency_seconds_count") - value(
        before, "taskmgmt_task_claim_latency_seconds_count"
    )
    moved = value(after, "taskmgmt_task_reassignments_total", kind="failover") - value(
        before, "taskmgmt_task_reassignments_total", kind="failover"
    )
    assert claims == 1
    assert moved == 2 == Task.objects.filter(assigned_node=alive).count() - 1


@pytest.mark.django_db
def test_with_redis_down_metrics_answer_from_the_database_and_say_the_cache_is_down(
    client, metrics_token, settings
):
    settings.CACHES = redis_cache(unreachable_redis_url())
    settings.DASHBOARD_CACHE_SECONDS = 5
    TaskFactory(assigned_node=NodeFactory())

    samples = scrape(client)

    assert value(samples, "taskmgmt_cache_up") == 0
    assert value(samples, "taskmgmt_tasks_open", status="pending") == 1


@pytest.mark.django_db
def test_the_cache_is_up_in_the_metrics(client, metrics_token):
    assert value(scrape(client), "taskmgmt_cache_up") == 1


@pytest.mark.django_db
def test_the_database_is_up_in_the_metrics(client, metrics_token):
    """Down, the scrape is still a 200 (tests/test_faults.py stops a real MariaDB)."""
    assert value(scrape(client), "taskmgmt_database_up") == 1


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_another_method_than_get_is_a_json_405_not_a_csrf_page(metrics_token, method):
    # As a real client: Django's test client skips the CSRF check unless told not to.
    client = Client(enforce_csrf_checks=True)

    response = getattr(client, method)("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["title"] == "Method Not Allowed"
    # Without the token it is the 401 first, as the API checks who asks before the method.
    assert getattr(client, method)("/metrics").status_code == 401


@pytest.mark.django_db
def test_accepted_progress_reports_are_counted_and_refused_ones_not(
    client, metrics_token, client_for
):
    node = NodeFactory()
    task = TaskFactory(assigned_node=node, status="in_progress")
    other = TaskFactory(assigned_node=node)  # pending: a report is a 409
    before = value(scrape(client), "taskmgmt_progress_reports_total")

    for body in ({"taskId": str(task.pk), "percent": 10}, {"taskId": str(task.pk), "percent": 20}):
        assert client_for(node).put("/api/tasks/progress", body, format="json").status_code == 200
    refused = client_for(node).put(
        "/api/tasks/progress", {"taskId": str(other.pk), "percent": 5}, format="json"
    )

    assert refused.status_code == 409
    assert value(scrape(client), "taskmgmt_progress_reports_total") - before == 2


@pytest.mark.django_db
def test_the_sweep_s_cancellations_come_from_the_database(client, metrics_token, settings):
    """The sweep runs in a process of its own (a timer's, cron's): its in-process count
    of cancellations never reached a scrape, its totals in the database do."""
    TaskFactory(status="in_progress", cancel_requested_at=timezone.now() - timedelta(minutes=5))
    before = value(scrape(client), "taskmgmt_sweep_cancelled_tasks_total")

    call_command("collect_failed", verbosity=0)

    assert value(scrape(client), "taskmgmt_sweep_cancelled_tasks_total") - before == 1


def test_a_command_runs_when_the_named_metrics_dir_does_not_exist_yet(tmp_path):
    """The sweep may share gunicorn's PROMETHEUS_MULTIPROC_DIR (docs/operations.md), which
    is gone while gunicorn is stopped (systemd's RuntimeDirectory) or before its first
    start: prometheus_client then failed every command at its first metric."""
    missing = tmp_path / "run" / "metrics"
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(missing),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SECRET_KEY": "metrics-dir-test-key",
        "DEBUG": "true",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert missing.is_dir()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("family", "values"),
    [
        ("taskmgmt_task_reassignments", ["manual", "failover", "drain"]),
        (
            "taskmgmt_login_failures",
            [
                "unknown_user",
                "wrong_password",
                "inactive",
                "invalid_login",
                "node_account",
                "rate_limited",
                "unavailable",
                "busy",
            ],
        ),
        ("taskmgmt_tasks_finished_recently", ["completed", "failed", "cancelled"]),
    ],
)
def test_a_help_line_names_every_label_value_it_takes(client, metrics_token, family, values):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    [help_text] = [
        found.documentation
        for found in text_string_to_metric_families(response.content.decode())
        if found.name == family
    ]

    assert [value for value in values if value not in help_text] == []


@pytest.mark.django_db
def test_a_404_under_api_is_counted_under_a_url_pattern_name_not_a_python_path(
    client, metrics_token
):
    before = scrape(client)
    assert client.get("/api/no-such-route").status_code == 404

    after = scrape(client)
    # The samples this request moved (other tests' views may be in the registry too).
    moved = [key for key, count in after.items() if count != before.get(key)]
    views = {dict(labels)["view"] for name, labels in moved if name.startswith("taskmgmt_http")}
    assert "api-not-found" in views
    assert not [view for view in views if "." in view]  # no module path as a label value


@pytest.mark.django_db(transaction=True)  # counted when the edit commits
def test_an_edit_giving_a_task_to_another_node_counts_as_a_manual_reassignment(
    client, metrics_token, admin_client, node
):
    # An admin's edit (the API's PUT /api/tasks, the admin site's form) that moved a
    # pending task to another node was not counted; assign counted the same move.
    task, other = TaskFactory(assigned_node=node), NodeFactory()
    deadline = (timezone.now() + timedelta(hours=1)).isoformat()
    body = {"taskId": str(task.pk), "taskName": "n", "taskDetails": "d", "lockedAt": deadline}
    before = scrape(client)

    kept = admin_client.put("/api/tasks", {**body, "assignedNode": str(node.pk)})
    middle = scrape(client)
    moved = admin_client.put("/api/tasks", {**body, "assignedNode": str(other.pk)})
    after = scrape(client)

    assert (kept.status_code, moved.status_code) == (200, 200), moved.content
    metric = "taskmgmt_task_reassignments_total"
    assert value(middle, metric, kind="manual") == value(before, metric, kind="manual")
    assert value(after, metric, kind="manual") == value(middle, metric, kind="manual") + 1
