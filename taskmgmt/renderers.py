"""The API's JSON renderer: DRF's, plus JSON text put into the output as it is.

A list page of tasks carries each task's payload, result and checkpoint, which
the database holds as JSON text. Parsing each to Python only to serialize it
again cost more than the rest of the page (README, Work data: performance);
`JSONText` marks such text, and the renderer copies it into its place unparsed.
"""

import functools
import json
import re
import secrets

from rest_framework import renderers
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.utils.encoders import JSONEncoder

# Private-use characters around a placeholder, with a nonce per response between
# them: no text a client sent can pose as one.
_OPEN, _CLOSE = "\ue000", "\ue001"


class JSONText:
    """A JSON value as valid JSON text (a JSON column's value as the database returns
    it), to be rendered as that value without being parsed."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other):  # for tests comparing built responses
        return isinstance(other, JSONText) and other.text == self.text

    __hash__ = None


class _Encoder(JSONEncoder):
    """DRF's encoder; each `JSONText` becomes a placeholder string, its text noted."""

    def __init__(self, *args, texts: list, nonce: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.texts, self.nonce = texts, nonce

    def default(self, obj):
        if isinstance(obj, JSONText):
            self.texts.append(obj.text)
            return f"{_OPEN}{self.nonce}:{len(self.texts) - 1}{_CLOSE}"
        return super().default(obj)


@functools.cache
def _placeholders(ensure_ascii: bool) -> re.Pattern:
    """A placeholder as the encoder quotes it, any nonce: compiled once, not per answer
    (a pattern with the answer's nonce in it missed re's cache every time)."""
    before, after = json.dumps(f"{_OPEN}:{_CLOSE}", ensure_ascii=ensure_ascii).split(":")
    return re.compile(re.escape(before) + "([0-9a-f]{16}):([0-9]+)" + re.escape(after))


# Every JSON answer says UTF-8, as the original's Express did: RFC 8259 needs no
# charset, but Windows PowerShell 5.1 reads a body without one as ISO-8859-1.
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


class JSONRenderer(renderers.JSONRenderer):
    charset = "utf-8"  # DRF adds it to the Content-Type (JSON_CONTENT_TYPE)

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        indent = self.get_indent(accepted_media_type, renderer_context or {})
        if indent is None:
            separators = (",", ":") if self.compact else (", ", ": ")
        else:
            separators = (",", ": ")
        texts, nonce = [], secrets.token_hex(8)
        output = json.dumps(
            data,
            cls=_Encoder,
            texts=texts,
            nonce=nonce,
            indent=indent,
            ensure_ascii=self.ensure_ascii,
            allow_nan=not self.strict,
            separators=separators,
        )
        if texts:
            # One pass over the output, each placeholder (a quoted string) by its text; a
            # string of the same form with another nonce is a client's, and stays.
            def text_of(match):
                return texts[int(match[2])] if match[1] == nonce else match[0]

            output = _placeholders(self.ensure_ascii).sub(text_of, output)
        # As DRF's: JSON that is also a strict JavaScript subset.
        output = output.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        # A lone surrogate a client sent, echoed in an error ("\ud800" is not a valid
        # choice), cannot be UTF-8: written as its JSON escape, as ensure_ascii would.
        return output.encode("utf-8", "backslashreplace")


class JSONWhateverAccepted(DefaultContentNegotiation):
    """DRF's negotiation, but an `Accept` the API cannot meet (`text/html`,
    `application/xml`) gets JSON, as the original system answered every request,
    not a 406: JSON is all the API speaks, and a client sending such a header still
    reads JSON. An `Accept` it can meet is honoured as before (`indent`)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type
