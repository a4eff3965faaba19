"""Keyset pages, newest first, as the SPEC's `limit` and `cursor`: the task lists'
(tasks.pagination) and a node's events (nodes.views).

The cursor is the (created_at, id) of the last row sent, so a page is one
index range scan however deep it is, and inserts or equal timestamps never
shift rows between pages. Tasks have UUID ids, node events integer ones: each
paginator names its `id_type`, and a cursor of the other kind is refused.
"""

import base64
import re
from datetime import UTC, datetime
from uuid import UUID

from django.conf import settings
from django.db.models import Q
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from taskmgmt.fields import iso_utc, uuid_text

# Every cursor we hand out has this form (URL-safe base64 of about 64 bytes, unpadded);
# the schema states it, and anything else is refused before decoding, where base64
# would skip stray characters and accept what the schema calls invalid.
CURSOR_PATTERN = "^[A-Za-z0-9_-]*$"
CURSOR_MAX_LENGTH = 128
NEXT_CURSOR_HELP = "Pass as `cursor` for the next page; null on the last page."
# The largest BigAutoField id: a larger one names no row, and overflows SQLite's driver.
BIG_ID_MAX = 2**63 - 1


def next_cursor_field() -> serializers.CharField:
    """A page's `nextCursor`, for the serializer of an answer that pages by hand."""
    return serializers.CharField(allow_null=True, read_only=True, help_text=NEXT_CURSOR_HELP)


def encode_cursor(created_at: datetime, row_id: UUID | int | str) -> str:
    """A row's position: `created_at|id`. It takes model values as well as a `TaskRow`'s
    driver values (a UUID's text); an integer id is written as its digits."""
    id_text = str(row_id) if isinstance(row_id, int) else uuid_text(row_id)
    text = f"{iso_utc(created_at)}|{id_text}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def integer_id(text: str) -> int:
    """A BigAutoField id from a cursor's text; ValueError for anything else."""
    # int() alone would take " 7", "+7", "7_0" and other scripts' digits.
    if not (text.isascii() and text.isdigit()) or int(text) > BIG_ID_MAX:
        raise ValueError("not an integer id")
    return int(text)


# How a cursor's id part is read, by the id type a paginator names.
ID_READERS = {UUID: lambda text: UUID(hex=text), int: integer_id}


def decode_cursor(cursor: str, id_type: type = UUID) -> tuple[datetime, UUID | int]:
    """The position a cursor names, its id an `id_type` (UUID or int); ValueError when
    it is not one of ours."""
    if len(cursor) > CURSOR_MAX_LENGTH or not re.fullmatch(CURSOR_PATTERN, cursor):
        raise ValueError("not a cursor's form")
    text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    created_text, _, id_text = text.partition("|")
    created_at = datetime.fromisoformat(created_text)
    if created_at.tzinfo is None:
        raise ValueError("the cursor's time has no offset")
    try:
        # Normalised here, so an offset that pushes the year out of range fails
        # as a bad cursor rather than inside the database driver.
        created_at = created_at.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("the cursor's time is out of range") from error
    return created_at, ID_READERS[id_type](id_text)


class KeysetPagination(BasePagination):
    """`{<results_key>, nextCursor}`; no `limit` means every row, as the original did.

    A subclass names its rows (`results_key`, `limit_description`) and their ids'
    type (`id_type`: UUID or int), which its cursors carry."""

    results_key = "results"
    id_type = UUID
    limit_query_param = "limit"
    cursor_query_param = "cursor"
    limit_description = "Rows per page; left out or empty, every row."

    def paginate_queryset(self, queryset, request, view=None):
        def read(after, limit):
            rows = queryset
            if after is not None:
                created_at, row_id = after
                rows = rows.filter(
                    Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=row_id)
                )
            rows = rows.order_by("-created_at", "-id")
            return list(rows if limit is None else rows[:limit])

        return self.paginate_rows(read, request)

    def paginate_rows(self, read, request) -> list:
        """The page `read(after, limit)` returns: the rows before `after` (a (created_at,
        id) position, or None for the first page), newest first, at most `limit` (None:
        all). Rows have `created_at` and `id` attributes (model instances, `TaskRow`s)."""
        limit = self.get_limit(request)
        cursor = request.query_params.get(self.cursor_query_param, "")
        after = None
        if cursor:
            try:
                after = decode_cursor(cursor, self.id_type)
            except ValueError:
                raise ValidationError(
                    {self.cursor_query_param: ["Malformed cursor: pass back a nextCursor."]}
                ) from None
        self.next_cursor = None
        if limit is None:
            return read(after, None)
        # One row more than asked tells whether another page exists, in the same query.
        rows = read(after, limit + 1)
        page = rows[:limit]
        if len(rows) > limit:
            self.next_cursor = encode_cursor(page[-1].created_at, page[-1].id)
        return page

    def get_limit(self, request) -> int | None:
        raw = request.query_params.get(self.limit_query_param, "")
        if raw == "":
            return None
        maximum = settings.MAX_PAGE_SIZE
        try:
            limit = int(raw) if raw.isascii() and raw.isdigit() else 0
        except ValueError:  # more digits than Python converts
            limit = 0
        if not 1 <= limit <= maximum:
            raise ValidationError(
                {self.limit_query_param: [f"Must be an integer from 1 to {maximum}."]}
            )
        return limit

    def openapi_parameters(self) -> list[OpenApiParameter]:
        """`limit` and `cursor` for the `@extend_schema` of a view that pages by hand:
        drf-spectacular adds them by itself only to list views."""
        return [
            OpenApiParameter(
                parameter["name"],
                parameter["schema"],
                OpenApiParameter.QUERY,
                required=False,
                description=parameter["description"],
            )
            for parameter in self.get_schema_operation_parameters(view=None)
        ]

    def get_paginated_response(self, data):
        return Response({self.results_key: data, "nextCursor": self.next_cursor})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": [self.results_key, "nextCursor"],
            "properties": {
                self.results_key: schema,
                "nextCursor": {
                    "type": "string",
                    "nullable": True,
                    "description": NEXT_CURSOR_HELP,
                },
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.limit_query_param,
                "in": "query",
                "required": False,
                "description": self.limit_description,
                "schema": {
                    "anyOf": [
                        {"type": "integer", "minimum": 1, "maximum": settings.MAX_PAGE_SIZE},
                        {"type": "string", "enum": [""]},
                    ]
                },
            },
            {
                "name": self.cursor_query_param,
                "in": "query",
                "required": False,
                "description": "The previous page's nextCursor.",
                "schema": {
                    "type": "string",
                    "pattern": CURSOR_PATTERN,
                    "maxLength": CURSOR_MAX_LENGTH,
                },
            },
        ]
