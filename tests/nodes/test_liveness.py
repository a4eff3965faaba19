"""Liveness has one definition: the queryset annotation and a single user agree."""

from datetime import timedelta

import pytest
from django.utils import timezone

from nodes.models import Liveness, Node
from tests.factories import NodeFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (None, Liveness.NEVER_SEEN),
        (0, Liveness.ALIVE),
        (14, Liveness.ALIVE),  # a late beat is not a missed one
        (16, Liveness.STALE),
        (29, Liveness.STALE),
        (31, Liveness.DOWN),
    ],
)
def test_liveness_follows_the_last_heartbeat(settings, age, expected):
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    now = timezone.now()
    node = NodeFactory(last_seen=None if age is None else now - timedelta(seconds=age))

    assert Node.objects.get(pk=node.pk).liveness(now) == expected
    assert Node.objects.with_liveness(now).get(pk=node.pk).liveness == expected
    assert Node.objects.down(now).filter(pk=node.pk).exists() == (expected == Liveness.DOWN)
    assert Node.objects.alive(now).filter(pk=node.pk).exists() == (expected == Liveness.ALIVE)


def test_an_inactive_node_is_never_alive_for_failover():
    node = NodeFactory(last_seen=timezone.now(), is_active=False)
    assert not Node.objects.alive().filter(pk=node.pk).exists()


def test_a_rate_limited_heartbeat_still_stamps_the_node(settings, client_for):
    """A node over RATELIMIT_API is answered 429, but it is talking: refused beats left it
    to go down, and the sweep failed over the task it was still working on."""
    settings.RATELIMIT_API = "1/h"
    node = NodeFactory()
    client = client_for(node)
    assert client.post("/api/nodes/heartbeat").status_code == 200
    Node.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(hours=1))

    refused = client.post("/api/nodes/heartbeat")

    assert refused.status_code == 429 and refused["Retry-After"].isdigit()
    assert Node.objects.get(pk=node.pk).liveness() == Liveness.ALIVE


def test_another_rate_limited_request_is_no_heartbeat(settings, client_for):
    settings.RATELIMIT_API = "1/h"
    node = NodeFactory(last_seen=timezone.now() - timedelta(hours=1))
    client = client_for(node)
    assert client.get("/api/tasks/node").status_code == 200

    assert client.get("/api/tasks/node").status_code == 429

    assert Node.objects.get(pk=node.pk).liveness() == Liveness.DOWN
