"""What the OpenAPI schema says about string input beyond drf-spectacular's defaults."""

from drf_spectacular.extensions import OpenApiSerializerFieldExtension

# DRF's CharField refuses NUL characters and, when it trims, a value of whitespace only
# (str.strip's whitespace, which is Python's `\s`): the schema says so, so a fuzzer's
# valid strings are ones the server takes.
NO_NUL = r"^[^\x00]*$"
# \x1c-\x1f and \x85 spelled out: Python strips them, an ECMA regex's \s (the schema's
# dialect, which fuzzers follow) does not match them.
NOT_BLANK_NO_NUL = r"^[^\x00]*[^\x00\s\x1c-\x1f\x85][^\x00]*$"


class CharFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "rest_framework.fields.CharField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if direction == "request" and schema.get("type") == "string" and "format" not in schema:
            trims_to_nonblank = self.target.trim_whitespace and not self.target.allow_blank
            schema["pattern"] = NOT_BLANK_NO_NUL if trims_to_nonblank else NO_NUL
        return schema
