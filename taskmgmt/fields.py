"""Serializer fields for JSON input, and the one output form of a time, shared by the apps."""

from datetime import UTC, datetime

from rest_framework import serializers


class JSONStringMixin:
    """Takes a JSON string only: DRF's own fields turn 0 or true into "0" or "True"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StringField(JSONStringMixin, serializers.CharField):
    pass


class IdField(serializers.UUIDField):
    """A UUID sent as a JSON string; DRF's own field would also take a number."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def iso_utc(value: datetime) -> str:
    """DRF's ISO 8601 form ("Z" for UTC) without its per-call settings lookups.

    A naive value is a database driver's, which is UTC.
    """
    if value.tzinfo is None:
        return value.isoformat() + "Z"
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z"
