"""Serializer fields for JSON input, and the one output form of a time and of an id,
shared by the apps."""

import re
from datetime import UTC, datetime
from uuid import UUID

from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings
from rest_framework.utils import humanize_datetime
from rest_framework.validators import ProhibitSurrogateCharactersValidator

_SURROGATE = re.compile("[\ud800-\udfff]")


class SurrogateValidator(ProhibitSurrogateCharactersValidator):
    """DRF's check and message, by a regex: DRF's walks the text in Python, which a
    1 MiB string makes costly before any rate limit (README, "What an anonymous request
    can cost")."""

    def __call__(self, value):
        found = _SURROGATE.search(str(value))
        if found:
            message = self.message.format(code_point=ord(found.group()))
            raise ValidationError(message, code=self.code)


class JSONStringMixin:
    """Takes a JSON string only: DRF's own fields turn 0 or true into "0" or "True".

    A string over max_length is refused before any validator (or subclass) reads it.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [
            SurrogateValidator()
            if type(validator) is ProhibitSurrogateCharactersValidator
            else validator
            for validator in self.validators
        ]

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class StringField(JSONStringMixin, serializers.CharField):
    pass


class JSONBooleanField(serializers.BooleanField):
    """Takes JSON true or false only: DRF's own field also takes "yes", "1", 1, "on"."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class MomentField(serializers.DateTimeField):
    """A moment as ISO 8601 text; sent without an offset it is taken as UTC. Printable
    ASCII only: Django's parser lets a NUL, a control character or another script's
    digits through and quietly reads the moment around them."""

    def __init__(self, **kwargs):
        super().__init__(default_timezone=UTC, **kwargs)

    def to_internal_value(self, value):
        if isinstance(value, str) and not (value.isascii() and value.isprintable()):
            formats = getattr(self, "input_formats", api_settings.DATETIME_INPUT_FORMATS)
            self.fail("invalid", format=humanize_datetime.datetime_formats(formats))
        if isinstance(value, str) and value.endswith("z"):
            value = value[:-1] + "Z"  # RFC 3339 allows a lowercase z; Django reads "Z" only
        return super().to_internal_value(value)


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


def uuid_text(value: UUID | str) -> str:
    """The canonical form of an id, from a UUID or a driver's text (hex on SQLite)."""
    if isinstance(value, str) and len(value) == 36:
        return value
    return str(value if isinstance(value, UUID) else UUID(hex=value))
