"""The API's renderer copies JSON columns' text into lists unparsed (taskmgmt/renderers.py)."""

import json
import uuid
from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient

from taskmgmt.renderers import JSONRenderer, JSONText
from tests.factories import TaskFactory

UTF8_JSON = "application/json; charset=utf-8"


def render(data, media_type=None) -> str:
    return JSONRenderer().render(data, media_type).decode()


def test_json_text_is_copied_as_the_value_it_holds():
    data = {
        "tasks": [
            {"id": uuid.UUID(int=1), "payload": JSONText('{"a": [1, 2.5, "é"]}')},
            {"id": uuid.UUID(int=2), "payload": None, "at": datetime(2026, 1, 1, tzinfo=UTC)},
        ]
    }

    parsed = json.loads(render(data))

    assert parsed["tasks"][0]["payload"] == {"a": [1, 2.5, "é"]}
    assert parsed["tasks"][1] == {
        "id": str(uuid.UUID(int=2)),
        "payload": None,
        "at": "2026-01-01T00:00:00Z",
    }


def test_text_a_client_sent_cannot_pose_as_a_placeholder():
    posing = "\ue000" + "0" * 16 + ":0\ue001"

    parsed = json.loads(render({"name": posing, "payload": JSONText("[1]")}))

    assert parsed == {"name": posing, "payload": [1]}


def test_ascii_only_output_holds_the_text_too():
    class AsciiRenderer(JSONRenderer):
        ensure_ascii = True

    posing = "\ue000" + "0" * 16 + ":0\ue001"
    data = {"name": posing, "é": JSONText('{"k": "é"}'), "more": [JSONText("2")] * 11}

    rendered = AsciiRenderer().render(data).decode()

    assert json.loads(rendered) == {"name": posing, "é": {"k": "é"}, "more": [2] * 11}


def test_indented_output_still_holds_the_text():
    rendered = render({"payload": JSONText('{"k": 1}')}, "application/json; indent=2")

    assert json.loads(rendered) == {"payload": {"k": 1}}


@pytest.mark.django_db
def test_a_list_page_gives_each_tasks_json_as_stored(admin_client):
    payloads = [{"n": n, "text": '\u2028 ünï "q"', "deep": [[{}]]} for n in range(3)]
    for payload in payloads:
        TaskFactory(payload=payload, result=[payload["n"]], checkpoint="text")

    tasks = admin_client.get("/api/tasks/all").json()["tasks"]

    assert sorted((t["payload"]["n"], t["result"], t["checkpoint"]) for t in tasks) == [
        (0, [0], "text"),
        (1, [1], "text"),
        (2, [2], "text"),
    ]
    assert all(t["payload"]["text"] == '\u2028 ünï "q"' for t in tasks)


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "text/plain"])
def test_an_accept_the_api_cannot_meet_gets_json_not_a_406(admin_client, node, accept):
    # The original answered JSON whatever a client accepted; this was a 406.
    TaskFactory(assigned_node=node)

    listed = admin_client.get("/api/tasks/all", HTTP_ACCEPT=accept)
    refused = APIClient().get("/api/tasks/all", HTTP_ACCEPT=accept)

    assert (listed.status_code, listed["Content-Type"]) == (200, UTF8_JSON)
    assert len(listed.json()["tasks"]) == 1
    assert (refused.status_code, refused["Content-Type"]) == (401, UTF8_JSON)


@pytest.mark.django_db
def test_every_json_answer_names_utf_8_as_the_originals_did(admin_client, node):
    """Windows PowerShell 5.1's Invoke-RestMethod reads a body without a charset as
    ISO-8859-1: "café" came back "cafÃ©". The original's Express said utf-8."""
    task = TaskFactory(assigned_node=node, name="café ☕")
    answers = {
        "a view's 200": admin_client.get(f"/api/tasks/{task.pk}"),
        "a view's 401": APIClient().get("/api/tasks/all"),
        "a view's 405": admin_client.delete("/api/tasks/all"),
        "the schema's 405": admin_client.delete("/api/schema/"),
        "an unknown API path": APIClient().get("/api/no-such-thing"),
        "an unknown path": APIClient().get("/no-such-thing"),
        "the API root": APIClient().get("/api"),
        "the health check": APIClient().get("/healthz"),
    }

    for what, response in answers.items():
        assert response["Content-Type"] == UTF8_JSON, what
    assert answers["a view's 200"].json()["task"]["taskName"] == "café ☕"


def test_an_accept_the_api_can_meet_is_still_honoured(admin_client):
    response = admin_client.get("/api/tasks/all", HTTP_ACCEPT="application/json; indent=2")

    assert response.content.startswith(b'{\n  "')
