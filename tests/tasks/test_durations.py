"""The dashboard's and node page's durations read as people read them."""

import pytest
from django.template import Context, Template

from tasks.templatetags.durations import duration


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (0.4, "0 s"),
        (14, "14 s"),
        (14.6, "15 s"),
        (60, "1 min"),
        (125, "2 min 5 s"),
        (3_600, "1 h"),
        (7_800, "2 h 10 min"),
        (7_805, "2 h 10 min"),
        (86_400, "1 d"),
        (2 * 86_400 + 10 * 3_600 + 59, "2 d 10 h"),
        (9 * 86_400 + 23 * 3_600, "9 d 23 h"),
        (10 * 86_400 + 5 * 3_600, "10 d"),
        (209_096_316, "2420 d"),
        (-3, "0 s"),  # a clock a little ahead of the database's
        (None, "—"),
    ],
)
def test_a_duration_reads_as_people_read_it(seconds, shown):
    assert duration(seconds) == shown


def test_templates_load_it_as_a_filter():
    rendered = Template("{% load durations %}{{ age|duration }} ago").render(
        Context({"age": 55_512_000})
    )

    assert rendered == "642 d ago"
