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
    NO_CAUSE: "#a7b6c2",
}
COMPLETED_COLOUR = "#29a634"
CHART_WIDTH, CHART_HEIGHT, BAR_GAP = 720, 180, 4


def chart(data: dict) -> dict:
    """Stacked bars per hour (completed at the bottom, then each cause), laid out here
    so the page needs no script: each segment links to its tasks."""
    hours = data["hours"]
    tallest = max((hour["completed"] + sum(hour["failed"].values()) for hour in hours), default=0)
    scale = CHART_HEIGHT / tallest if tallest else 0
    slot = CHART_WIDTH / len(hours)
    bars = []
    for i, hour in enumerate(hours):
        until = hour["start"] + timedelta(hours=1)
        segments = [("completed", hour["completed"], COMPLETED_COLOUR, None)] + [
            (cause, count, CAUSE_COLOURS.get(cause, "#a7b6c2"), cause)
            for cause, count in sorted(hour["failed"].items())
        ]
        top = CHART_HEIGHT
        rects = []
        for label, count, colour, cause in segments:
            if not count:
                continue
            height = max(count * scale, 1)
            top -= height
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
                    "x": round(i * slot + BAR_GAP / 2, 1),
                    "y": round(top, 1),
                    "width": round(slot - BAR_GAP, 1),
                    "height": round(height, 1),
                    "colour": colour,
                    "url": url,
                    "title": f"{hour['start']:%H}:00 {label}: {count}",
                }
            )
        bars.append({"rects": rects, "label": f"{hour['start']:%H}", "x": round(i * slot, 1)})
    legend = [("completed", COMPLETED_COLOUR)] + [
        (cause, colour) for cause, colour in CAUSE_COLOURS.items() if cause != NO_CAUSE
    ]
    return {
        "bars": bars,
        "tallest": tallest,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "legend": legend,
    }
