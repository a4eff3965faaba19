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
