"""A node's heartbeat as the tests send it, and the stamp it leaves in the database."""

from datetime import datetime

from accounts.models import User


def beat(client) -> datetime:
    response = client.post("/api/nodes/heartbeat")
    assert response.status_code == 200, response.content
    return datetime.fromisoformat(response.json()["serverTime"])


def stored_last_seen(node):
    return User.objects.values_list("last_seen", flat=True).get(pk=node.pk)
