"""tasks.views.validated_fast: the hot endpoints' bodies checked as DRF's serializer checks them."""

import json

import pytest
from rest_framework.exceptions import ValidationError
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from tasks.serializers import TaskProgressSerializer, TaskStatusSerializer
from tasks.views import validated_fast

TASK = "8dde0cd0-c60f-4db0-9442-30c9ce4919b9"
BODIES = [
    {},
    {"taskId": TASK},
    {"taskId": TASK, "taskStatus": "completed", "result": {"rows": [1, 2]}, "attempt": 2},
    {"taskId": TASK, "taskStatus": "failed", "reason": "disk full", "result": None},
    {"taskId": TASK, "taskStatus": "done"},
    {"taskId": 5, "taskStatus": None, "reason": 7, "attempt": "x"},
    {"taskId": "not-a-uuid", "taskStatus": "in_progress", "attempt": 0},
    {"taskId": TASK, "taskStatus": "failed", "reason": "x" * 501},
    {"taskId": TASK, "percent": 50, "message": "half", "checkpoint": {"row": 1}},
    {"taskId": TASK, "percent": 101, "message": "m" * 201, "checkpoint": "\ud800"},
    {"taskId": TASK, "percent": True, "message": None, "attempt": -1},
    {"taskId": TASK, "unknown": 1},
]


def outcome(check):
    try:
        return "valid", check()
    except ValidationError as error:
        return "invalid", error.detail


def parsed(body):
    """A DRF request with `body` as JSON (escaped: a lone surrogate is a client's to send)."""
    request = APIRequestFactory().put("/", json.dumps(body), content_type="application/json")
    return APIView().initialize_request(request)


@pytest.mark.parametrize("serializer_class", [TaskStatusSerializer, TaskProgressSerializer])
@pytest.mark.parametrize("body", BODIES)
def test_the_same_values_and_the_same_errors_as_the_serializer(serializer_class, body):
    def by_serializer():
        serializer = serializer_class(data=body)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    assert outcome(lambda: validated_fast(serializer_class, parsed(body))) == outcome(by_serializer)
