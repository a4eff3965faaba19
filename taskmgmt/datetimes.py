"""MariaDB's DATETIME values read by `datetime.fromisoformat` instead of MySQLdb's parser.

mysqlclient turns each DATETIME into a `datetime` with `MySQLdb.times.DateTime_or_None`,
Python that slices the text and calls `int()` seven times (~1.3 µs): a list page of
50 tasks reads 150 of them, about a tenth of the page's CPU (docs/performance.md).
`datetime.fromisoformat` is C and reads the two forms MariaDB sends for `datetime(0)`
and `datetime(6)` columns; anything else (another precision, a zero date, a DATE)
still goes to mysqlclient's own function, so the values are the same ones
(tests/test_datetimes.py compares them).
"""

from datetime import datetime

from django.db.backends.signals import connection_created
from django.dispatch import receiver
from MySQLdb.constants import FIELD_TYPE
from MySQLdb.times import DateTime_or_None


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _usual_form(text: str) -> bool:
    """'YYYY-MM-DD HH:MM:SS' or 'YYYY-MM-DD HH:MM:SS.ffffff': nothing fromisoformat
    would read as a time zone or another precision."""
    return (
        (len(text) == 19 or (len(text) == 26 and text[19] == "." and _digits(text[20:])))
        and text[4] == text[7] == "-"
        and text[10] == " "
        and text[13] == text[16] == ":"
    )


def datetime_or_none(text: str):
    """`DateTime_or_None(text)`, the same value, faster for MariaDB's usual forms."""
    if _usual_form(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # a zero date or an invalid one: mysqlclient's answer (None)
    return DateTime_or_None(text)


@receiver(connection_created)
def read_datetimes_faster(sender, connection, **kwargs):
    if connection.vendor == "mysql":
        converters = connection.connection.converter
        for field_type in (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP):
            converters[field_type] = datetime_or_none
