"""Durations as people read them: "14 s", "2 h 10 min", "2 d 10 h", "642 d"."""

from django import template

register = template.Library()

UNITS = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))


@register.filter
def duration(seconds) -> str:
    """The two largest units of a number of seconds; days alone from ten days up,
    where the hours no longer matter. None (never) reads as a dash."""
    if seconds is None or seconds == "":
        return "—"
    left = max(0, round(float(seconds)))
    parts = []
    for name, size in UNITS:
        count, left = divmod(left, size)
        if count or parts:
            parts.append((count, name))
    if not parts:
        return "0 s"
    (first, first_unit), *rest = parts
    if (first_unit == "d" and first >= 10) or not rest or rest[0][0] == 0:
        return f"{first} {first_unit}"
    return f"{first} {first_unit} {rest[0][0]} {rest[0][1]}"


@register.filter
def duration_ms(seconds) -> str:
    """A short span, as a sweep run takes: milliseconds below a second, else `duration`."""
    if seconds is None or seconds == "":
        return "—"
    seconds = float(seconds)
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else duration(seconds)
