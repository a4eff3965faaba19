"""The node page's forms: cordon, drain, uncordon and a maintenance window, checked as
the API checks them (a reason but for uncordon; deadlines and windows in the future)."""

import json
from datetime import timedelta

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import is_encodable
from nodes.models import NODE_REASON_MAX_LENGTH


def moment_input():
    # Text in the admin's one format, not the browser's datetime-local picker, which
    # writes the browser's locale beside a label that names the server's zone.
    return forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD HH:MM", "size": 16})


def zone() -> str:
    """The zone the admin shows and reads moments in (UTC unless TIME_ZONE says)."""
    return timezone.localtime().tzname()


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=NODE_REASON_MAX_LENGTH)


class UncordonForm(forms.Form):
    reason = forms.CharField(max_length=NODE_REASON_MAX_LENGTH, required=False)


class DrainForm(ReasonForm):
    deadline = forms.DateTimeField(required=False, widget=moment_input())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["deadline"].label = f"Deadline ({zone()})"
        self.fields["deadline"].help_text = (
            "Until when work in progress may finish. Empty: a drain's current deadline, "
            f"else in {settings.DRAIN_DEADLINE_MINUTES} min."
        )

    def clean_deadline(self):
        # Empty stays None: the service keeps a drain's deadline or sets the default.
        deadline = self.cleaned_data["deadline"]
        if deadline is not None and deadline <= timezone.now():
            raise ValidationError("The deadline must be in the future.")
        return deadline


class MaintenanceForm(ReasonForm):
    starts_at = forms.DateTimeField(widget=moment_input())
    ends_at = forms.DateTimeField(widget=moment_input())
    drain = forms.BooleanField(required=False, label="Drain at the start, not only cordon")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["starts_at"].label = f"Starts ({zone()})"
        self.fields["ends_at"].label = f"Ends ({zone()})"

    def clean(self):
        cleaned = super().clean()
        starts, ends = cleaned.get("starts_at"), cleaned.get("ends_at")
        if starts and ends:
            if ends <= timezone.now():
                self.add_error("ends_at", "The window lies in the past.")
            elif starts < timezone.now() - timedelta(minutes=1):
                self.add_error("starts_at", "The window must not start in the past.")
            elif ends <= starts:
                self.add_error("ends_at", "The window must end after it starts.")
        return cleaned


class JSONBoxField(forms.JSONField):
    """The admin's JSON boxes (labels, a task's node selector and payload): Django's field
    knows one failure of Python's json, a syntax error; JSON nested too deeply (a
    RecursionError) or a number too long to read (a ValueError) was a 500."""

    def to_python(self, value):
        try:
            return super().to_python(value)
        except (RecursionError, ValueError) as error:
            raise ValidationError(
                "Enter a valid JSON: this is nested too deeply or holds a number too long.",
                code="invalid",
            ) from error

    def bound_data(self, data, initial):
        # The refused text goes back in its box, as a syntax error's does.
        try:
            return super().bound_data(data, initial)
        except (RecursionError, ValueError):
            return forms.fields.InvalidJSONInput(data)


class LabelsFormField(JSONBoxField):
    """The labels box: a refused value is shown back escaped when it holds a lone
    surrogate (sent as \\ud800), which the page itself could not encode (a 500 before)."""

    def prepare_value(self, value):
        text = super().prepare_value(value)
        return text if is_encodable(text) else json.dumps(value)
