"""The admin's one reassign form: the task list's action and the node page's
"reassign all its open tasks" both move tasks with it; and the cancel form."""

from datetime import timedelta

from django import forms
from django.conf import settings
from django.utils import timezone

from nodes.models import Node
from tasks.models import CANCEL_REASON_MAX_LENGTH, validate_future


class CancelForm(forms.Form):
    """The admin's cancel (the task page's button and the list's action)."""

    reason = forms.CharField(
        max_length=CANCEL_REASON_MAX_LENGTH,
        required=False,
        help_text="Shown to the node with the cancel request and kept in the task's history.",
    )


class ReassignForm(forms.Form):
    node = forms.ModelChoiceField(queryset=Node.objects.none())
    locked_at = forms.DateTimeField(
        label="New deadline",
        required=False,
        help_text=(
            "A future date and time (UTC). Empty: a task keeps its deadline unless it has "
            "passed or is nearer than REASSIGN_DEADLINE_MINUTES, then gets now + that."
        ),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def __init__(self, *args, source: Node | None = None, **kwargs):
        """`source`: the node whose open tasks all move (the node page); it is no target,
        and the deadline offered is a fresh one."""
        super().__init__(*args, **kwargs)
        # A cordoned or draining node takes no new work: it is not offered.
        nodes = Node.objects.schedulable()
        self.fields["node"].queryset = nodes.exclude(pk=source.pk) if source else nodes
        if source is not None:
            self.fields["node"].label = "Reassign all its open tasks to"
            self.fields["locked_at"].initial = (
                timezone.now() + timedelta(minutes=settings.REASSIGN_DEADLINE_MINUTES)
            ).strftime("%Y-%m-%dT%H:%M")

    def clean_locked_at(self):
        locked_at = self.cleaned_data["locked_at"]
        if locked_at is not None:
            validate_future(locked_at)
        return locked_at
