"""The API records that it serves, and liveness counts a node's silence only while it did
(nodes.serving): an outage of the API or the database is never taken
for the nodes' deaths, and a node dead before the outage stays dead.

Times are explicit (`record_serving(now=…)`, `with_liveness(now)`), so no test waits.
"""

import logging
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from nodes.models import Liveness, Node, ServingRecord
from nodes.serving import record_serving
from tests.factories import NodeFactory

pytestmark = pytest.mark.django_db

HEARTBEAT, DOWN_AFTER = 10, 30  # so a gap (no answer at all) is 11 s


@pytest.fixture(autouse=True)
def _liveness(settings):
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = HEARTBEAT, DOWN_AFTER


def at(seconds: float):
    return NOW + timedelta(seconds=seconds)


NOW = timezone.now().replace(microsecond=0)


def serving(*moments: float) -> ServingRecord:
    for moment in moments:
        record_serving(now=at(moment))
    return ServingRecord.current()


def liveness(node, now_offset: float = 0) -> str:
    return Node.objects.with_liveness(at(now_offset)).get(pk=node.pk).liveness


def last_seen(seconds: float):
    return NodeFactory(last_seen=at(seconds))


def test_the_first_answer_starts_a_serving_stretch():
    record = serving(-5)
    assert (record.serving_since, record.last_serving) == (at(-5), at(-5))
    assert record.outage_began is None


def test_answers_closer_than_the_gap_extend_the_stretch():
    record = serving(-50, -40, -31, -21, -12)
    assert (record.serving_since, record.last_serving, record.outage_began) == (
        at(-50),
        at(-12),
        None,
    )


def test_an_answer_after_a_gap_starts_a_new_stretch_and_remembers_the_outage():
    record = serving(-100, -90, -60, -59)
    assert (record.serving_since, record.last_serving, record.outage_began) == (
        at(-60),
        at(-59),
        at(-90),
    )


def test_an_earlier_stamp_never_moves_the_record_back():
    record = serving(-10, -30)  # another host's clock behind, or a slow request
    assert (record.serving_since, record.last_serving) == (at(-10), at(-10))


def test_without_any_record_all_silence_counts():
    assert liveness(last_seen(-31)) == Liveness.DOWN


def test_a_node_silent_through_an_outage_longer_than_down_after_is_not_down():
    serving(-200, -190, -180, -170, -160, -150, -140, -130, -120, -110, -100, -95, -1)
    # Seen just before the API stopped answering at -95; the API is back since -1.
    node = last_seen(-96)
    assert liveness(node) == Liveness.ALIVE  # 1 s before the outage + 1 s after it
    serving(10, 14)  # the API answers on, the node stays silent
    assert liveness(node, now_offset=14) == Liveness.STALE
    serving(20, 29)
    assert liveness(node, now_offset=29) == Liveness.DOWN  # 1 + 30 s of serving silence


def test_a_node_dead_before_the_outage_stays_down_through_it():
    serving(-200, -190, -180, -170, -160, -150, -140, -130, -120, -110, -100, -95, -1)
    dead = last_seen(-130)  # 35 s unseen while the API answered
    assert liveness(dead) == Liveness.DOWN


def test_while_nothing_is_answered_silence_stops_counting():
    serving(-100, -90, -80, -70, -60)
    # The API answered last at -60: no node has been able to beat since.
    assert liveness(last_seen(-61)) == Liveness.ALIVE
    assert liveness(last_seen(-95)) == Liveness.DOWN  # 35 s unseen while it answered
    assert liveness(last_seen(-61), now_offset=600) == Liveness.ALIVE


def test_down_and_alive_querysets_follow_the_same_rule():
    serving(-200, -190, -180, -170, -160, -150, -140, -130, -120, -110, -100, -95, -1)
    survivor, dead = last_seen(-96), last_seen(-130)
    assert list(Node.objects.down(NOW)) == [dead]
    assert list(Node.objects.alive(NOW)) == [survivor]


def test_the_node_list_shows_the_same_liveness(admin_client):
    now = timezone.now()
    for moment in (-200, -100, -95, -1):
        record_serving(now=now + timedelta(seconds=moment))
    node = NodeFactory(last_seen=now - timedelta(seconds=96))

    response = admin_client.get("/api/nodes")

    assert [(n["nodeId"], n["liveness"]) for n in response.json()["nodes"]] == [
        (str(node.pk), Liveness.ALIVE)
    ]


def test_an_answered_request_records_serving_at_most_once_a_second(serving_recorded, client):
    table = ServingRecord._meta.db_table
    with CaptureQueriesContext(connection) as first:
        assert client.get("/healthz").status_code == 200
    with CaptureQueriesContext(connection) as second:
        assert client.get("/healthz").status_code == 200

    record = ServingRecord.current()
    assert record is not None and record.serving_since == record.last_serving
    assert any(table in query["sql"] for query in first)
    assert not any(table in query["sql"] for query in second)


def test_a_failed_record_never_costs_the_answer(serving_recorded, client, caplog, monkeypatch):
    def database_gone(**kwargs):
        raise OperationalError(2006, "MySQL server has gone away")

    monkeypatch.setattr("nodes.serving.record_serving", database_gone)
    with caplog.at_level(logging.WARNING, logger="taskmgmt.serving"):
        assert client.get("/healthz").status_code == 200

    assert [r.event for r in caplog.records if r.name == "taskmgmt.serving"] == [
        "serving_not_recorded"
    ]
