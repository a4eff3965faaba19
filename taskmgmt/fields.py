"""Serializer fields for JSON input shared by both apps."""

from rest_framework import serializers


class JSONStringMixin:
    """Takes a JSON string only: DRF's own fields turn 0 or true into "0" or "True"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StringField(JSONStringMixin, serializers.CharField):
    pass
