"""taskmgmt.datetimes: MariaDB's DATETIMEs read faster, to the very same values."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.utils import timezone
from MySQLdb.constants import FIELD_TYPE
from MySQLdb.times import DateTime_or_None

from taskmgmt.datetimes import datetime_or_none
from tasks.models import Task
from tests.factories import TaskFactory

TEXTS = [
    "2026-12-06 17:00:00.123456",
    "2026-12-06 17:00:00.000000",
    "2026-12-06 17:00:00.000001",
    "2026-12-06 17:00:00",
    "1000-01-01 00:00:00.000000",
    "9999-12-31 23:59:59.999999",
    "2024-02-29 12:30:45.500000",
    # Not MariaDB's usual forms, or not valid: mysqlclient's own answers.
    "0000-00-00 00:00:00",
    "0000-00-00 00:00:00.000000",
    "2026-02-30 10:00:00",
    "2026-13-01 10:00:00.000000",
    "2026-12-06 24:00:00",
    "2026-12-06 17:00:00.120",
    "2026-12-06 17:00:00.1",
    "2026-12-06",
    "2026-12-06 17:00",
    "2026-12-06 17:00+01",
    "2026-12-06 17:00:00+010000",
    "2026-12-06 17:00:00.12345Z",
    "2026-12-06 17:00:0Z",
    "2026-12-06 17:00:00.12345\u00b2",
    "2026-12-06T17:00:00.123456",
    "abcd-ef-gh ij:kl:mn",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_every_text_reads_as_mysqlclient_reads_it(text):
    expected, read = DateTime_or_None(text), datetime_or_none(text)

    assert (type(read), read) == (type(expected), expected)
    if isinstance(read, datetime):
        assert read.tzinfo is None  # naive UTC, as Django expects from the driver


@pytest.mark.django_db
def test_mariadb_connections_read_through_it_and_round_trip_every_microsecond():
    task = TaskFactory()
    written = [
        datetime(2026, 12, 6, 17, 0, 0, micro, tzinfo=UTC) for micro in (0, 1, 123456, 999999)
    ]
    for value in written:
        Task.objects.filter(pk=task.pk).update(locked_at=value)
        assert Task.objects.get(pk=task.pk).locked_at == value
    assert timezone.is_aware(Task.objects.get(pk=task.pk).created_at)

    if connection.vendor == "mysql":
        converters = connection.connection.converter
        assert converters[FIELD_TYPE.DATETIME] is datetime_or_none
        assert converters[FIELD_TYPE.TIMESTAMP] is datetime_or_none
