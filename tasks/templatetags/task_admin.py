"""The task list's date drill-down, from the first and last task instead of a scan.

Django's `date_hierarchy` lists the years (months, days) that hold a task with
SELECT DISTINCT over every row's truncated date, most of the task list's time
on a large table (docs/performance.md, Admin task list). This one offers every period between the
first and last task in view, read at the two ends of the created_at index; a
period inside that range may hold no task, and then its page is empty.
"""

import datetime

from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.utils import formats, timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

register = template.Library()


def _months(first: datetime.date, last: datetime.date):
    month = first.replace(day=1)
    while month <= last:
        yield month
        month = (month + datetime.timedelta(days=32)).replace(day=1)


def _days(first: datetime.date, last: datetime.date):
    for offset in range((last - first).days + 1):
        yield first + datetime.timedelta(days=offset)


def task_date_hierarchy(cl):
    """The context of `admin/date_hierarchy.html`, as Django's tag builds it."""
    field = cl.date_hierarchy
    year_field, month_field, day_field = f"{field}__year", f"{field}__month", f"{field}__day"
    year, month, day = (cl.params.get(name) for name in (year_field, month_field, day_field))

    def link(filters):
        return cl.get_query_string(filters, [f"{field}__"])

    if year and month and day:
        chosen = datetime.date(int(year), int(month), int(day))
        return {
            "show": True,
            "back": {
                "link": link({year_field: year, month_field: month}),
                "title": capfirst(formats.date_format(chosen, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
        }
    bounds = cl.queryset.created_range()
    if bounds is None:
        return {"show": True, "back": None, "choices": []}
    first, last = (timezone.localtime(value).date() for value in bounds)
    if not year and first.year == last.year:  # one year (or month) only: start inside it
        year = first.year
        if first.month == last.month:
            month = first.month
    if year and month:
        return {
            "show": True,
            "back": {"link": link({year_field: year}), "title": str(year)},
            "choices": [
                {
                    "link": link({year_field: year, month_field: month, day_field: date.day}),
                    "title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT")),
                }
                for date in _days(first, last)
            ],
        }
    if year:
        return {
            "show": True,
            "back": {"link": link({}), "title": _("All dates")},
            "choices": [
                {
                    "link": link({year_field: year, month_field: date.month}),
                    "title": capfirst(formats.date_format(date, "YEAR_MONTH_FORMAT")),
                }
                for date in _months(first, last)
            ],
        }
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({year_field: str(number)}), "title": str(number)}
            for number in range(first.year, last.year + 1)
        ],
    }


@register.tag(name="task_date_hierarchy")
def task_date_hierarchy_tag(parser, token):
    return InclusionAdminNode(
        parser,
        token,
        func=task_date_hierarchy,
        template_name="date_hierarchy.html",
        takes_context=False,
    )
