"""Labels, not codes: a task status as people read it ("In progress", not in_progress)."""

from django import template

from tasks.models import TaskStatus

register = template.Library()


@register.filter
def status_label(value) -> str:
    """A status code's label; anything else (a node id, nothing) as it is, or a dash."""
    if not value:
        return "—"
    return TaskStatus(value).label if value in TaskStatus.values else value
