"""The admin's one reassign form: the task list's action and the node page's
"reassign all its open tasks" both move tasks with it, and both say in the same
words what it will do and what it did to the deadlines; and the cancel form."""

import json

from django import forms
from django.conf import settings
from django.utils import timezone

from nodes.forms import JSONBoxField
from nodes.models import Liveness, Node, labels_errors
from tasks.models import (
    CANCEL_REASON_MAX_LENGTH,
    PRIORITY_MAX,
    PRIORITY_MIN,
    json_size_error,
    validate_future,
)
from tasks.templatetags.moments import moment


class CancelForm(forms.Form):
    """The admin's cancel (the task page's button and the list's action)."""

    reason = forms.CharField(
        max_length=CANCEL_REASON_MAX_LENGTH,
        required=False,
        help_text="Shown to the node with the cancel request and kept in the task's history.",
    )


class OptionalJSONField(JSONBoxField):
    """A JSON box that may be left empty (None): none shows as an empty box, not as the
    JSON `null` one had to delete before typing."""

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "required": False})

    def prepare_value(self, value):
        if value is None:
            return ""
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value  # what was typed, back in the box with its error
        return json.dumps(value, indent=2, ensure_ascii=False)


class PayloadField(OptionalJSONField):
    """A task's payload, checked as the API checks it (TASK_PAYLOAD_MAX_BYTES, no NUL)."""

    def __init__(self, **kwargs):
        # As a model form's field too, whose model field names its own help.
        kwargs["widget"] = forms.Textarea(attrs={"rows": 6, "class": "tm-json-input"})
        kwargs["help_text"] = (
            "Optional: any JSON value the worker gets with the task, e.g."
            ' {"input": "s3://bucket/file.csv"}. Empty: none.'
        )
        super().__init__(**kwargs)

    def validate(self, value):
        super().validate(value)
        error = json_size_error(value, settings.TASK_PAYLOAD_MAX_BYTES)
        if error:
            raise forms.ValidationError(error)


def no_schedulable_node(*, other: bool = False) -> str:
    """What a reassign says when its node list is empty: the task list's (every node),
    or a node page's (`other`: every node but the one whose tasks would move)."""
    other_ = "other " if other else ""
    return (
        f"No {other_}node is schedulable: every {other_}active node is cordoned, "
        "draining or in a maintenance window. Uncordon one on its page to move these "
        "tasks to it."
    )


class NodeChoiceField(forms.ModelChoiceField):
    """A node to give tasks to, its liveness named unless alive: schedulable is about
    cordons and windows, so a down node is offered, and must not look like the rest."""

    def label_from_instance(self, node) -> str:
        return node_label(node)


def node_label(node) -> str:
    """A node as a list of targets names it: its liveness (annotated, `with_liveness` or
    `liveness_case`) in brackets unless alive."""
    liveness = getattr(node, "liveness", Liveness.ALIVE)
    if liveness == Liveness.ALIVE:
        return str(node)
    return f"{node} ({Liveness(liveness).label.lower()})"


class ReassignForm(forms.Form):
    node = NodeChoiceField(queryset=Node.objects.none())
    locked_at = forms.DateTimeField(
        label="New deadline for all (optional)",
        required=False,
        # Text, not the browser's datetime-local picker, which writes the browser's
        # locale beside a help text that names the server's zone.
        widget=forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD HH:MM"}),
    )

    def __init__(self, *args, source: Node | None = None, **kwargs):
        """`source`: the node whose open tasks all move (the node page); it is no target.

        No deadline is offered: an empty field keeps each task's own (the API's
        assign rule), so one click cannot give a thousand tasks the same minute."""
        super().__init__(*args, **kwargs)
        # A cordoned or draining node takes no new work: it is not offered.
        nodes = Node.objects.schedulable().with_liveness()
        self.fields["node"].queryset = nodes.exclude(pk=source.pk) if source else nodes
        if source is not None:
            self.fields["node"].label = "Reassign all its open tasks to"
        zone = timezone.localtime().tzname()
        self.fields["locked_at"].help_text = (
            f"Leave empty to keep each task's deadline; one that has passed or is less than "
            f"{settings.REASSIGN_DEADLINE_MINUTES} min away becomes now + "
            f"{settings.REASSIGN_DEADLINE_MINUTES} min. A date and time here "
            f"(YYYY-MM-DD HH:MM, {zone}) replaces every task's deadline."
        )

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
        key = key.strip()
        if key in labels:  # "a=b, a=c" kept the last: no node has both values
            raise forms.ValidationError(f"{key!r} is given twice: give each label once.")
        labels[key] = value.strip()
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        minutes = settings.REASSIGN_DEADLINE_MINUTES
        self.fields["locked_at"].help_text = (
            f"Left empty, each task keeps its deadline unless that has passed or is less than "
            f"{minutes} min away, then now + {minutes} min. A date and time here "
            f"(YYYY-MM-DD HH:MM, {timezone.localtime().tzname()}) replaces every task's."
        )

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
        # Text in the one format, as the reassign deadline: not the browser's picker.
        widget=forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD HH:MM"}),
    )
    priority = forms.IntegerField(min_value=PRIORITY_MIN, max_value=PRIORITY_MAX, initial=50)
    labels = forms.CharField(
        label="Node labels",
        required=False,
        help_text="key=value, comma-separated; empty: every schedulable node.",
    )
    payload = PayloadField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        zone = timezone.localtime().tzname()
        self.fields["locked_at"].label = f"Deadline ({zone})"
        self.fields["locked_at"].help_text = f"A future date and time, YYYY-MM-DD HH:MM, {zone}."

    def clean_labels(self):
        return parsed_labels(self.cleaned_data["labels"])

    def clean_locked_at(self):
        locked_at = self.cleaned_data["locked_at"]
        validate_future(locked_at)
        return locked_at


def deadline_plan(preview: dict[str, int], locked_at) -> str:
    """What a reassignment will do to the deadlines of the tasks `preview`
    (tasks.selectors.reassign_preview) counts."""
    if locked_at is not None:
        return f"All {preview['moving']} get the deadline {moment(locked_at, 'minutes')}."
    kept = preview["moving"] - preview["stale"]
    return (
        f"{preview['stale']} have a deadline that has passed or is less than "
        f"{settings.REASSIGN_DEADLINE_MINUTES} min away: they get now + "
        f"{settings.REASSIGN_DEADLINE_MINUTES} min. The other {kept} keep their own deadline."
    )


def deadline_outcome(moved, locked_at) -> str:
    """What a reassignment did to the deadlines (`moved`: tasks.services.Reassigned)."""
    if locked_at is not None:
        return f"Set {moved.new_deadlines} deadline(s) to {moment(locked_at, 'minutes')}."
    return (
        f"Renewed {moved.new_deadlines} stale deadline(s) to now + "
        f"{settings.REASSIGN_DEADLINE_MINUTES} min; "
        f"{len(moved) - moved.new_deadlines} kept their own."
    )
