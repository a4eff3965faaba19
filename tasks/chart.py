"""The dashboard's chart of the last day, as SVG geometry: stacked bars per hour
(completed, then each failure cause), each segment a link to its tasks."""

from datetime import timedelta

from tasks.changelist_links import changelist_url, failures_url
from tasks.dashboard import NO_CAUSE
from tasks.models import FailureCause, TaskStatus

CAUSE_COLOURS = {
    FailureCause.NODE_REPORTED: "#d9822b",
    FailureCause.DEADLINE: "#c23030",
    FailureCause.NODE_LOST: "#8f398f",
    FailureCause.ADMIN: "#5c7080",
    FailureCause.DRAINED: "#2965cc",
    NO_CAUSE: "#a7b6c2",
}
# A failure from before causes were recorded: in the legend only when a bar has one.
NO_CAUSE_LABEL = "Cause not recorded"
COMPLETED_COLOUR = "#29a634"
# Pixels: the bars' height and the room left of them for the y-axis' numbers, and above
# the tallest bar. Across, the bars are laid out in percent of the plot's width, so the
# chart fills its panel at any width while its text stays the page's size: a chart
# scaled to its panel (an SVG viewBox) drew 21 px labels at 1920 px, 29 at 2560.
CHART_HEIGHT, AXIS_WIDTH, HEADROOM = 200, 44, 14
# The gap between two bars, a share of an hour's slot.
BAR_GAP = 0.08


def axis_top(tallest: int) -> int:
    """The y-axis' top: the tallest bar rounded up to 1, 2 or 5 times a power of ten."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= tallest:
                return step * magnitude
        magnitude *= 10


def chart(data: dict) -> dict:
    """Stacked bars per hour (completed at the bottom, then each cause) over a y-axis,
    laid out here so the page needs no script: each segment links to its tasks, and
    the current hour is labelled "now"."""
    hours = data["hours"]
    tallest = max((hour["completed"] + sum(hour["failed"].values()) for hour in hours), default=0)
    top_value = axis_top(tallest)
    plot_height = CHART_HEIGHT - HEADROOM
    scale = plot_height / top_value
    slot = 100 / len(hours)  # percent of the plot's width
    bars = []
    for i, hour in enumerate(hours):
        until = hour["start"] + timedelta(hours=1)
        segments = [("Completed", hour["completed"], COMPLETED_COLOUR, None)] + [
            (cause_label(cause), count, CAUSE_COLOURS.get(cause, CAUSE_COLOURS[NO_CAUSE]), cause)
            for cause, count in sorted(hour["failed"].items())
        ]
        bottom = CHART_HEIGHT
        rects = []
        left = i * slot
        for label, count, colour, cause in segments:
            if not count:
                continue
            height = max(count * scale, 1)
            bottom -= height
            url = (
                failures_url(cause, hour["start"], until)
                if cause
                else changelist_url(
                    status__exact=TaskStatus.COMPLETED,
                    updated_at__gte=hour["start"].isoformat(),
                    updated_at__lt=until.isoformat(),
                )
            )
            rects.append(
                {
                    "x": round(left + slot * BAR_GAP / 2, 2),
                    "y": round(bottom, 1),
                    "width": round(slot * (1 - BAR_GAP), 2),
                    "height": round(height, 1),
                    "colour": colour,
                    "url": url,
                    "title": f"{hour['start']:%H}:00 to {until:%H}:00, {label}: {count}",
                }
            )
        now = i == len(hours) - 1
        bars.append(
            {
                "rects": rects,
                # Every third hour, and the current one, which reads "now".
                "label": "now" if now else f"{hour['start']:%H}:00" if i % 3 == 0 else "",
                "now": now,
                "x": round(left + slot / 2, 2),
            }
        )
    ticks = [
        {
            "value": value,
            "y": round(CHART_HEIGHT - value * scale, 1),
            "label_y": round(CHART_HEIGHT - value * scale + 4, 1),
        }
        for value in sorted({0, top_value // 2, top_value})
        if value or top_value
    ]
    uncaused = any(NO_CAUSE in hour["failed"] for hour in hours)
    legend = [("Completed", COMPLETED_COLOUR)] + [
        (cause_label(cause), colour)
        for cause, colour in CAUSE_COLOURS.items()
        if cause != NO_CAUSE or uncaused
    ]
    return {
        "bars": bars,
        "ticks": ticks,
        "tallest": tallest,
        "height": CHART_HEIGHT,
        "axis_x": AXIS_WIDTH,
        "legend": legend,
    }


def cause_label(cause: str) -> str:
    return FailureCause(cause).label if cause in FailureCause.values else NO_CAUSE_LABEL
