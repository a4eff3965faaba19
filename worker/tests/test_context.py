"""The worker's own logic, without a server: how a task's work ends up reported."""

import json
import sys
import threading
import time

from taskmgmt_worker import worker as worker_module
from taskmgmt_worker.client import Api, LoginRefused
from taskmgmt_worker.locks import TaskLocks
from taskmgmt_worker.worker import (
    Context,
    Heartbeat,
    Worker,
    failure,
    json_or_none,
    sleep_work,
)


def context(task=None) -> Context:
    api = Api("http://127.0.0.1:9", "node@example.com", "x", threading.Event())
    return Context(api, task or {"id": "t1", "attempt": 3, "checkpoint": {"elapsed": 1}})


def test_a_context_names_the_tasks_attempt_and_its_last_checkpoint():
    ctx = context()

    assert (ctx.task_id, ctx.attempt, ctx.checkpoint) == ("t1", 3, {"elapsed": 1})


def test_an_older_server_without_attempt_falls_back_to_attempts_or_none():
    assert context({"id": "t", "attempts": 2}).attempt == 2
    assert context({"id": "t"}).attempt is None


def test_a_cancel_request_in_an_answer_sets_cancelled_but_is_not_a_revocation():
    ctx = context()

    ctx.learn({"revokedTaskIds": []}, {})  # a server that never sends cancelTaskIds
    assert not ctx.cancelled.is_set()
    ctx.learn({"cancelTaskIds": ["other"]}, {})
    assert not ctx.cancelled.is_set()
    ctx.learn({"cancelTaskIds": ["t1"]}, {})

    assert ctx.cancelled.is_set() and ctx.is_set()  # the old `cancelled` event's API too
    assert (ctx.cancel_requested, ctx.revoked) == (True, False)


def test_a_cancel_request_on_the_task_itself_counts_too():
    ctx = context()

    ctx.learn({}, {"cancelRequestedAt": "2026-01-01T00:00:00Z"})

    assert ctx.cancel_requested


def logged(capsys) -> list[dict]:
    """The log lines written since the last call, without their times."""
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [{key: value for key, value in line.items() if key != "time"} for line in lines]


def test_a_cancel_request_learned_from_a_progress_answer_logs_the_admins_reason(capsys):
    # A progress answer carries the task, with the reason the admin gave for the request.
    ctx = context()

    ctx.learn({}, {"cancelRequestedAt": "2026-01-01T00:00:00Z", "cancelReason": "wrong input"})
    ctx.learn({"cancelTaskIds": ["t1"]}, {})  # the next beat says it again: logged once

    assert logged(capsys) == [{"event": "cancel_requested", "task": "t1", "reason": "wrong input"}]


def test_a_progress_answer_without_a_task_object_is_taken_without_a_crash(monkeypatch):
    # A proxy answering 200 with `"task": "<html>…"` raised AttributeError out of
    # progress() into the work, which then failed for nothing it did.
    ctx = context()
    monkeypatch.setattr(ctx.api, "call", lambda *args, **kwargs: (200, {"task": "<html>"}))

    assert ctx.progress(50, "half") is True
    assert not ctx.cancelled.is_set()


def test_a_cancel_request_without_a_reason_logs_none(capsys):
    # A heartbeat's cancelTaskIds names the task only; an admin may give no reason.
    for answer, task in (({"cancelTaskIds": ["t1"]}, {}), ({}, {"cancelRequestedAt": "x"})):
        ctx = context()
        ctx.learn(answer, {**task, "cancelReason": None} if task else task)

        (line,) = logged(capsys)
        assert line["event"] == "cancel_requested" and "reason" not in line


def test_a_raised_exception_is_the_reason_and_its_traceback_the_result():
    def work():
        raise ValueError("bad row 7")

    try:
        work()
    except ValueError as error:
        report = failure(error)

    assert report["taskStatus"] == "failed"
    assert report["reason"] == "ValueError: bad row 7"
    assert report["result"]["error"] == "ValueError"
    assert "in work" in report["result"]["traceback"]
    assert report["result"]["traceback"].endswith("ValueError: bad row 7\n")


def test_a_long_reason_is_cut_to_what_the_server_keeps():
    assert len(failure(RuntimeError("x" * 900))["reason"]) == 500


def test_a_return_value_that_is_not_json_fails_the_task_with_why():
    assert json_or_none({"a": [1, None]}) == ({"a": [1, None]}, None)
    value, problem = json_or_none({1, 2})
    assert value is None and "not JSON" in problem
    assert json_or_none(float("nan"))[0] is None


def test_the_default_work_stops_at_once_when_cancelled():
    ctx = context({"id": "t"})
    ctx.cancelled.set()

    try:
        sleep_work(60)({"id": "t"}, ctx)
    except RuntimeError as error:
        assert str(error) == "cancelled"
    else:
        raise AssertionError("the work went on")


def test_a_beat_answered_after_its_task_was_reported_does_not_revoke_it(monkeypatch, capsys):
    # The beat named the task, the report finished first: the answer's revokedTaskIds
    # lists it (no longer in progress), but it is done, not taken away.
    ctx = context()
    beat = Heartbeat(ctx.api, threading.Event())
    beat.working_on(ctx)

    def answered_late(*args, **kwargs):
        beat.working_on(None)  # the report was answered meanwhile
        return 200, {"heartbeatSeconds": 2, "revokedTaskIds": ["t1"], "cancelTaskIds": ["t1"]}

    monkeypatch.setattr(ctx.api, "call", answered_late)
    beat.beat()

    assert (ctx.revoked, ctx.cancel_requested) == (False, False)
    assert "revoked" not in capsys.readouterr().out


def test_a_work_that_calls_sys_exit_fails_its_task_and_the_worker_goes_on(monkeypatch, tmp_path):
    # It ended the process with the task in progress; restarted, the worker took the task
    # up again and exited again: a crash loop, each start a login.
    def work(task, context):
        sys.exit(3)

    api = Api("http://127.0.0.1:9", "node@example.com", "x", threading.Event())
    sent = []

    def call(method, path, body=None, **options):
        sent.append(body)
        return 200, {}

    monkeypatch.setattr(api, "call", call)
    worker = Worker(api, work, idle_seconds=0, max_tasks=None, locks=TaskLocks(tmp_path))

    worker.perform({"id": "t1", "attempt": 1})

    assert sent[-1]["taskStatus"] == "failed"
    assert sent[-1]["reason"].startswith("SystemExit: 3")
    assert worker.done == 1


class RecordingApi:
    """An Api's `call`, answering 200 and noting each progress report's body."""

    def __init__(self):
        self.sent = []

    def call(self, method, path, body=None, **kwargs):
        self.sent.append(body)
        return 200, {"task": {}}


def test_progress_sends_at_most_one_report_a_second_and_the_latest_at_its_end(monkeypatch):
    """A work reporting every row of a fast loop sent a request per row: the node's rate
    limit ran out (429s), and each 429 held the work up for its Retry-After."""
    monkeypatch.setattr(worker_module, "PROGRESS_MIN_SECONDS", 0.3)
    api = RecordingApi()
    ctx = Context(api, {"id": "t1", "attempt": 2})

    for row in range(1, 51):
        checkpoint = {"row": row} if row < 50 else None  # the last call names none
        assert ctx.progress(2 * row, f"row {row}", checkpoint) is True

    assert [body["percent"] for body in api.sent] == [2]  # the first, at once
    deadline = time.monotonic() + 5
    while len(api.sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.4)  # and nothing more after it
    latest = {"taskId": "t1", "percent": 100, "message": "row 50", "checkpoint": {"row": 49}}
    assert api.sent[1:] == [{**latest, "attempt": 2}]


def test_a_report_held_when_the_work_ends_goes_before_the_end_once(monkeypatch):
    monkeypatch.setattr(worker_module, "PROGRESS_MIN_SECONDS", 0.2)
    api = RecordingApi()
    ctx = Context(api, {"id": "t1", "attempt": 1})
    ctx.progress(10)
    ctx.progress(20, checkpoint={"row": 2})  # held

    ctx.close()
    time.sleep(0.4)

    assert [(body["percent"], body.get("checkpoint")) for body in api.sent] == [
        (10, None),
        (20, {"row": 2}),
    ]
    assert ctx.progress(30) is False and len(api.sent) == 2


def test_a_report_held_when_the_task_was_taken_away_is_not_sent(monkeypatch):
    monkeypatch.setattr(worker_module, "PROGRESS_MIN_SECONDS", 0.2)
    api = RecordingApi()
    ctx = Context(api, {"id": "t1", "attempt": 1})
    ctx.progress(10)
    ctx.progress(20)  # held
    ctx.revoke(status=403)

    ctx.close()
    time.sleep(0.4)

    assert [body["percent"] for body in api.sent] == [10]


def test_an_idle_worker_looks_for_its_orphaned_tasks_at_once_then_now_and_then(
    monkeypatch, tmp_path
):
    """Each idle poll also read the node's tasks in progress: ten idle processes of a node
    sent 600 requests a minute, its whole default rate limit, doing nothing."""
    monkeypatch.setattr(worker_module, "RESUME_EVERY_SECONDS", 3600)
    api = Api("http://127.0.0.1:9", "node@example.com", "x", threading.Event())
    asked = []

    def call(method, path, body=None, **options):
        asked.append(path)
        if path == "/api/tasks/claim" and asked.count(path) == 20:
            worker.stop.set()
        if path == "/api/tasks/filter/in_progress":
            return 200, {"tasks": []}
        return (204, {}) if path == "/api/tasks/claim" else (200, {})

    monkeypatch.setattr(api, "call", call)
    worker = Worker(api, sleep_work(0), idle_seconds=0, max_tasks=None, locks=TaskLocks(tmp_path))

    worker.run()

    assert asked.count("/api/tasks/claim") == 20
    assert asked.count("/api/tasks/filter/in_progress") == 1  # the first idle poll's


def test_each_drain_of_a_worker_that_keeps_waiting_is_logged_and_so_is_its_end(
    monkeypatch, capsys, tmp_path
):
    # A worker kept through an uncordon must say so when its node is drained again.
    api = Api("http://127.0.0.1:9", "node@example.com", "x", threading.Event())
    worker = Worker(
        api,
        sleep_work(0),
        idle_seconds=0,
        max_tasks=None,
        keep_waiting_when_drained=True,
        locks=TaskLocks(tmp_path),
    )
    answers = iter(
        [
            {"schedulable": False, "drainDeadline": "2026-12-07T10:00:00Z"},
            {"schedulable": False, "drainDeadline": "2026-12-07T10:00:00Z"},  # the same drain
            {"schedulable": True, "drainDeadline": None},  # uncordoned
            {"schedulable": True, "drainDeadline": None},
            {"schedulable": False, "drainDeadline": "2026-12-07T12:00:00Z"},  # drained again
        ]
    )
    monkeypatch.setattr(api, "call", lambda *args, **kwargs: (200, next(answers)))
    for _ in range(5):
        worker.heartbeat.beat()

    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["event"], line["deadline"]) for line in logged] == [
        ("drained", "2026-12-07T10:00:00Z"),
        ("drain_ended", "2026-12-07T10:00:00Z"),
        ("drained", "2026-12-07T12:00:00Z"),
    ]
    assert not worker.stop.is_set()  # it keeps waiting


class RefusingApi(RecordingApi):
    """Answers the first report, then refuses the login (the node was deactivated)."""

    def call(self, method, path, body=None, **kwargs):
        if self.sent:
            raise LoginRefused("login as node@example.com: 403 This account is deactivated.")
        return super().call(method, path, body, **kwargs)


def test_a_refused_login_is_a_refused_report_not_an_exception_in_the_work(monkeypatch, capsys):
    # Raised from progress(), it failed the work's own code; raised from the timer's
    # thread sending a held report, it printed a traceback amid the JSON lines.
    monkeypatch.setattr(worker_module, "PROGRESS_MIN_SECONDS", 0.2)
    api = RefusingApi()
    ctx = Context(api, {"id": "t1", "attempt": 1})
    assert ctx.progress(10) is True
    ctx.progress(20)  # held, sent by the timer's thread
    time.sleep(0.5)

    assert ctx.revoked and ctx.cancelled.is_set()
    assert ctx.progress(30) is False  # taken away: nothing more is sent
    out, err = capsys.readouterr()
    assert err == ""
    (revoked,) = [json.loads(line) for line in out.splitlines()]
    assert revoked["event"] == "revoked" and "deactivated" in revoked["reason"]
