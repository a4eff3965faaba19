"""One way to write a moment on every admin page: "2026-12-07 07:08:12 UTC", in the
display TIME_ZONE (UTC unless set), always named. The admin's templates use it as the
`moment` filter (tasks/templatetags/moments.py); nodes and tasks call it alike."""

from django.utils import timezone


def moment(value, precision: str = "seconds") -> str:
    """`value` as the admin writes moments; "minutes" drops the seconds. None reads as a dash."""
    if value is None or value == "":
        return "—"
    local = timezone.localtime(value)
    shown = local.strftime("%Y-%m-%d %H:%M" + ("" if precision == "minutes" else ":%S"))
    return f"{shown} {local.tzname()}"
