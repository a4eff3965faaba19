"""Shapes every API test checks: the task and user objects, the error body."""

TASK_FIELDS = {
    "id",
    "taskName",
    "taskDetails",
    "assignedNode",
    "status",
    "lockedAt",
    "active",
    "createdAt",
    "updatedAt",
    "attempts",
    "failureCause",
    "failureReason",
    # Work data (README, Work data).
    "payload",
    "result",
    "progress",
    "checkpoint",
    "attempt",
    # Placement (docs/placement.md).
    "priority",
    "nodeSelector",
    "pinned",
    # Control of the work (docs/control-of-the-work.md).
    "cancelRequestedAt",
    "cancelReason",
}
USER_FIELDS = {"id", "name", "email", "role"}


def assert_json_error(response, status_code) -> dict:
    """The one error format: JSON `{title, message}`, plus `errors` for validation."""
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    assert isinstance(body["title"], str)
    assert isinstance(body["message"], str)
    assert set(body) <= {"title", "message", "errors"}
    return body
