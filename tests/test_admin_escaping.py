"""Markup that API clients write (nodes, and admins through the API) reads as text on
every admin page that shows it, never as markup (docs/security.md#what-api-clients-write)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db

MARKUP = '<script>x()</script>"><img src=x onerror=x()>'


def later(**delta) -> str:
    return (timezone.now() + timedelta(**delta)).isoformat()


def test_what_api_clients_write_reads_as_text_on_every_admin_page(
    admin_client, node_client, node, admin_site_client
):
    def ok(response):
        assert response.status_code < 300, response.content
        return response.json()

    ok(node_client.put("/api/auth/edit-profile", {"name": MARKUP, "email": node.email}))
    ok(admin_client.put(f"/api/nodes/{node.pk}", {"labels": {"zone": MARKUP[:63]}}, format="json"))
    created = [
        ok(
            admin_client.post(
                "/api/tasks",
                {
                    "taskName": MARKUP,
                    "taskDetails": MARKUP,
                    "assignedNode": str(node.pk),
                    "lockedAt": later(hours=2),
                    "payload": {MARKUP: [MARKUP]},
                    "nodeSelector": {"zone": MARKUP[:63]},
                },
                format="json",
            )
        )["task"]["id"]
        for _ in range(2)
    ]
    claimed = ok(node_client.post("/api/tasks/claim"))["task"]["id"]
    progress = {"taskId": claimed, "percent": 50, "message": MARKUP, "checkpoint": {MARKUP: 1}}
    ok(node_client.put("/api/tasks/progress", progress, format="json"))
    failure = {"taskId": claimed, "taskStatus": "failed", "reason": MARKUP, "result": [MARKUP]}
    ok(node_client.put("/api/tasks/shift-status", failure, format="json"))
    (pending,) = set(created) - {claimed}
    ok(admin_client.post(f"/api/tasks/{pending}/cancel", {"reason": MARKUP}, format="json"))
    window = {"startsAt": later(days=1), "endsAt": later(days=1, hours=1), "reason": MARKUP}
    ok(admin_client.post(f"/api/nodes/{node.pk}/maintenance", window, format="json"))
    ok(admin_client.post(f"/api/nodes/{node.pk}/cordon", {"reason": MARKUP}, format="json"))

    pages = [
        reverse("admin:index"),
        reverse("admin:activity"),
        reverse("admin:node", args=[node.pk]),
        reverse("admin:accounts_user_changelist"),
        reverse("admin:accounts_user_change", args=[node.pk]),
        reverse("admin:tasks_taskhistory_changelist"),
        reverse("admin:tasks_task_changelist"),
        reverse("admin:tasks_task_changelist") + "?status__exact=failed",
        reverse("admin:tasks_task_changelist") + "?status__exact=cancelled",
        *(reverse("admin:tasks_task_change", args=[task]) for task in created),
    ]
    for page in pages:
        response = admin_site_client.get(page)
        text = response.content.decode()
        assert response.status_code == 200, page
        assert "&lt;script&gt;x()&lt;/script&gt;" in text, page  # shown, escaped
        assert "<script>x()" not in text and "<img src=x" not in text, page


RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: reverses the text after it, up to the paragraph's end


def test_a_right_to_left_override_in_a_name_or_reason_stays_inside_it(
    admin_client, node_client, node, admin_site_client
):
    """A node names itself: an override in its name must not reverse the sentence around
    it ("… rof <moc.elpmaxe@…> for …"), so client text inside a sentence is isolated."""

    def ok(response):
        assert response.status_code < 300, response.content
        return response.json()

    ok(node_client.put("/api/auth/edit-profile", {"name": f"evil{RLO}", "email": node.email}))
    body = {"taskName": "t", "taskDetails": "d", "assignedNode": str(node.pk)}
    task = ok(admin_client.post("/api/tasks", {**body, "lockedAt": later(hours=2)}))["task"]["id"]
    ok(node_client.post("/api/tasks/claim"))
    ok(node_client.put("/api/tasks/shift-status", {"taskId": task, "taskStatus": "failed"}))
    window = {"startsAt": later(days=1), "endsAt": later(days=1, hours=1), "reason": f"up{RLO}"}
    ok(admin_client.post(f"/api/nodes/{node.pk}/maintenance", window))
    ok(admin_client.post(f"/api/nodes/{node.pk}/drain", {"reason": f"kernel{RLO}"}))

    task_page = admin_site_client.get(reverse("admin:tasks_task_change", args=[task]))
    node_page = admin_site_client.get(reverse("admin:node", args=[node.pk]))

    name = f"<bdi>evil{RLO} &lt;{node.email}&gt;</bdi>"
    # Its node is draining: the page says so (no Retry), the name isolated in the sentence.
    assert f"{name}</a> is draining and takes no new tasks" in task_page.content.decode()
    assert f"<bdi>up{RLO}</bdi>" in node_page.content.decode()
    activity = admin_site_client.get(reverse("admin:activity")).content.decode()
    assert f"<bdi>kernel{RLO}</bdi> (until " in activity
