"""The admin's one reassign form: the task list's action and the node page's
"reassign all its open tasks" both move tasks with it; and the cancel form."""

from datetime import timedelta

from django import forms
from django.conf import settings
from django.utils import timezone

from nodes.models import Node, labels_errors
from tasks.models import CANCEL_REASON_MAX_LENGTH, PRIORITY_MAX, PRIORITY_MIN, validate_future


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


def parsed_labels(text: str) -> dict:
    """`key=value, key=value` (as pages show labels) as a dict; ValidationError if malformed."""
    labels = {}
    for part in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = part.partition("=")
        if not equals:
            raise forms.ValidationError(f"{part!r}: write labels as key=value.")
        labels[key.strip()] = value.strip()
    errors = labels_errors(labels)
    if errors:
        raise forms.ValidationError(errors)
    return labels


class LabelReassignForm(forms.Form):
    """The list's "reassign by label": placement picks a node with these labels per task."""

    labels = forms.CharField(
        label="Node labels",
        help_text="key=value, comma-separated (e.g. gpu=true, region=eu): every one must match.",
    )
    locked_at = ReassignForm.base_fields["locked_at"]

    def clean_labels(self):
        return parsed_labels(self.cleaned_data["labels"])

    def clean_locked_at(self):
        locked_at = self.cleaned_data["locked_at"]
        if locked_at is not None:
            validate_future(locked_at)
        return locked_at


class BroadcastForm(forms.Form):
    """The admin's broadcast: one task for every schedulable node with these labels."""

    name = forms.CharField(max_length=255)
    details = forms.CharField(widget=forms.Textarea, max_length=10_000)
    locked_at = forms.DateTimeField(
        label="Deadline",
        help_text="A future date and time (UTC).",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    priority = forms.IntegerField(min_value=PRIORITY_MIN, max_value=PRIORITY_MAX, initial=50)
    labels = forms.CharField(
        label="Node labels",
        required=False,
        help_text="key=value, comma-separated; empty: every schedulable node.",
    )

    def clean_labels(self):
        return parsed_labels(self.cleaned_data["labels"])

    def clean_locked_at(self):
        locked_at = self.cleaned_data["locked_at"]
        validate_future(locked_at)
        return locked_at
