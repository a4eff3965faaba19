"""The worker's loop: claim a task, run the work function on it, report, repeat."""

import json
import threading
import time
import traceback

from taskmgmt_worker.client import Api, LoginRefused, Stopping, log
from taskmgmt_worker.locks import TaskLocks, default_directory, key_of

REASON_LIMIT = 500  # characters the server keeps of a failure reason
MESSAGE_LIMIT = 200  # characters the server keeps of a progress message
TRACEBACK_LIMIT = 4_000  # characters of a traceback sent as a failure's result
# A progress report is worth a few retries, not the work's time: the next one says more.
PROGRESS_GIVE_UP_SECONDS = 10.0
# At most one progress report a second is sent: the server keeps only the latest, and a
# work reporting every row of a fast loop spent its node's rate limit (429s) on them.
PROGRESS_MIN_SECONDS = 1.0
# An idle process looks for its node's orphaned tasks in progress at most this often (the
# first time at once): every idle poll, ten idle processes of a node spent its rate limit.
RESUME_EVERY_SECONDS = 10.0


class Context:
    """What the work function gets beside the task: `progress()` and `cancelled`.

    `cancelled` (a threading.Event) is set when the server asks for the task to be
    cancelled, takes it away, or the worker must stop now: the work should stop
    soon. The context also answers `is_set()` and `wait()` as that event does, so a
    work function written as `function(task, cancelled)` keeps working.
    """

    def __init__(self, api: Api, task: dict):
        self.api, self.task = api, task
        self.task_id = task["id"]
        # The attempt every report names: a report for an older one is refused (409).
        self.attempt = task.get("attempt", task.get("attempts"))
        self.cancelled = threading.Event()
        self.cancel_requested = False  # by an admin: acknowledged as `cancelled`
        self.revoked = False  # taken away: nothing is reported
        # Reports come one at a time; one within PROGRESS_MIN_SECONDS of the last is held
        # (only the latest) and sent when that second is up.
        self._sending = threading.Lock()
        self._sent_at = None  # time.monotonic() of the last report sent
        self._held = None  # the report body waiting for its turn
        self._timer = None
        self._closed = False

    @property
    def payload(self):
        return self.task.get("payload")

    @property
    def checkpoint(self):
        """The last checkpoint any attempt sent: where this one may resume."""
        return self.task.get("checkpoint")

    def is_set(self) -> bool:
        return self.cancelled.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.cancelled.wait(timeout)

    def progress(self, percent=None, message: str | None = None, checkpoint=None) -> bool:
        """Report how far the task has got (percent 0-100) and, with `checkpoint` (any
        JSON value), where a later attempt should resume; False if the server refused it
        (the task was taken away, or is no longer in progress).

        Only the latest report is kept, on the server and here: a report within
        PROGRESS_MIN_SECONDS of the last one sent is held, replacing any held before it,
        and sent when that second is up (a call may report as often as it likes). A
        checkpoint left out keeps the last one.
        """
        if message is not None:
            message = str(message)[:MESSAGE_LIMIT]
        body = {"taskId": self.task_id, "percent": percent, "message": message}
        if checkpoint is not None:
            body["checkpoint"] = checkpoint
        if self.attempt is not None:
            body["attempt"] = self.attempt
        with self._sending:
            if self._closed:
                return False
            if "checkpoint" not in body and self._held and "checkpoint" in self._held:
                body["checkpoint"] = self._held["checkpoint"]  # a held one is not lost
            wait = 0.0
            if self._sent_at is not None:
                wait = self._sent_at + PROGRESS_MIN_SECONDS - time.monotonic()
            if wait > 0:
                self._held = body
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._send_held)
                    self._timer.daemon = True
                    self._timer.start()
                return not self.revoked
            self._held = None  # sent now, with its checkpoint: a timer due finds nothing
            return self._send(body)

    def _send_held(self) -> None:
        with self._sending:
            self._timer = None
            body, self._held = self._held, None
            if body is not None and not self._closed:
                self._send(body)

    def close(self) -> None:
        """The work is over: a held report goes now, before the task's end is reported,
        so the task keeps its last progress and checkpoint (a failed one may be retried
        from it). Not for a task taken away, nor when the worker halts: nothing is said."""
        with self._sending:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            body, self._held, self._closed = self._held, None, True
            quiet = self.revoked or (self.cancelled.is_set() and not self.cancel_requested)
            if body is not None and not quiet:
                self._send(body)

    def _send(self, body: dict) -> bool:
        self._sent_at = time.monotonic()
        try:
            status, answer = self.api.call(
                "PUT", "/api/tasks/progress", body, give_up_after=PROGRESS_GIVE_UP_SECONDS
            )
        except LoginRefused as error:
            # Deactivated, say: a refusal like any other, not an exception in the work (or
            # a traceback from the timer's thread, which sends a held report).
            self.revoke(reason=str(error))
            return False
        except Stopping:  # the worker halts: its work is being cancelled
            return False
        if status == 200:
            self.learn(answer, task_in(answer) or {})
            return True
        if status in (403, 404, 409):  # another node's now, deleted, or no longer in progress
            self.revoke(status=status, message=answer.get("message"))
        elif status is not None:
            log("progress_refused", task=self.task_id, status=status, message=answer.get("message"))
        return False

    def learn(self, answer: dict, task: dict) -> None:
        """A cancel request in an answer: `cancelTaskIds`, or the task's own fields, which
        also carry the admin's reason (a heartbeat's answer names the task only)."""
        if self.task_id in answer.get("cancelTaskIds", ()) or task.get("cancelRequestedAt"):
            self.request_cancel(reason=task.get("cancelReason"))

    def request_cancel(self, reason=None) -> None:
        if not self.cancel_requested:
            why = {"reason": reason} if isinstance(reason, str) and reason else {}
            log("cancel_requested", task=self.task_id, **why)
        self.cancel_requested = True
        self.cancelled.set()

    def revoke(self, **fields) -> None:
        if not self.revoked:
            log("revoked", task=self.task_id, **fields)
        self.revoked = True
        self.cancelled.set()


class Heartbeat(threading.Thread):
    """Beats every `heartbeatSeconds` the server names, and says which task it works on."""

    def __init__(self, api: Api, finished: threading.Event, on_drained=None):
        super().__init__(name="heartbeat", daemon=True)
        self.api, self.finished = api, finished
        # Called with each answer's drain deadline: a string while the node drains, else None.
        self.on_drained = on_drained
        self.interval = 1.0  # until the first answer names the server's
        self.lock = threading.Lock()
        self.current: Context | None = None

    def working_on(self, context: Context | None) -> None:
        with self.lock:
            self.current = context

    def cancel_current(self) -> None:
        with self.lock:
            if self.current:
                self.current.cancelled.set()

    def beat(self) -> None:
        with self.lock:
            current = self.current
        body = {"taskIds": [current.task_id]} if current else {}
        # Retried at least every interval whatever the backoff: a node whose beats
        # wait out a long pause looks dead to the server once it answers again.
        status, payload = self.api.call(
            "POST", "/api/nodes/heartbeat", body, abort=self.finished, max_pause=self.interval
        )
        if status != 200:
            log("heartbeat_refused", status=status, message=payload.get("message"))
            return
        self.interval = max(0.2, float(payload.get("heartbeatSeconds", self.interval)))
        draining = payload.get("schedulable") is False and payload.get("drainDeadline")
        if self.on_drained:
            self.on_drained(payload["drainDeadline"] if draining else None)
        with self.lock:
            # Finished while the beat was out (reported, perhaps): no longer in progress, so
            # listed as revoked, but done, not taken away; it logged `revoked` after `completed`.
            if not current or current is not self.current:
                return
            if current.task_id in payload.get("revokedTaskIds", ()):
                current.revoke()
            current.learn(payload, {})

    def run(self) -> None:
        # Beats go on while a stopping worker finishes its task: it must not look dead.
        while not self.finished.is_set():
            try:
                self.beat()
            except Stopping:
                return
            except LoginRefused as error:
                # Deactivated, say: nothing the work does can be reported, and its task moves
                # to another node once this one is down. It stops now, not at its end (the
                # refused login itself is the main loop's to log, once).
                with self.lock:
                    if self.current:
                        self.current.revoke(reason=str(error))
                return
            except Exception as error:  # a beat lost is not a reason to stop beating
                log("heartbeat_error", error=repr(error))
            self.finished.wait(self.interval)


def sleep_work(seconds: float, progress_every: float = 1.0):
    """The default work: wait `seconds` in all, reporting progress with a checkpoint
    every `progress_every` seconds, and resuming from the last checkpoint."""

    def work(task: dict, context: Context):
        checkpoint = task.get("checkpoint")
        start = float(checkpoint.get("elapsed", 0)) if isinstance(checkpoint, dict) else 0.0
        done = start
        while done < seconds:
            step = min(progress_every, seconds - done)
            if context.cancelled.wait(step):
                raise RuntimeError("cancelled")
            done += step
            if done < seconds:
                percent = round(100 * done / seconds, 1)
                context.progress(percent, f"{done:g} of {seconds:g} s", {"elapsed": done})
        return {"slept": seconds, "resumedFrom": start}

    return work


def failure(error: BaseException) -> dict:
    """A raised exception as a failure report: its reason, and its traceback as the result."""
    lines = traceback.format_exception(error)
    text = "".join(lines)[-TRACEBACK_LIMIT:]
    return {
        "taskStatus": "failed",
        "reason": f"{type(error).__name__}: {error}"[:REASON_LIMIT],
        "result": {"error": type(error).__name__, "message": str(error), "traceback": text},
    }


def result_refused(status: int | None, payload: dict) -> str | None:
    """Why the server refused a report's result, or None: a 400 naming `result` (over
    TASK_RESULT_MAX_BYTES, a NUL), or a 413, a body over the server's own limit, which only
    the result can make (the reason and traceback are cut short). Else the report was
    refused and the task left in progress, its work done, until its deadline."""
    if status == 413:
        return payload.get("message") or "the request body is too large"
    if status == 400:
        for error in payload.get("errors", ()):
            if isinstance(error, dict) and error.get("field") == "result":
                return error.get("message")
    return None


def task_in(answer: dict) -> dict | None:
    """The task a 200 carries (`task`), or None when it carries none: a proxy or captive
    portal answering 200 with a page of its own must not crash the worker."""
    task = answer.get("task")
    return task if isinstance(task, dict) and isinstance(task.get("id"), str) else None


def json_or_none(value):
    """`value` if it can travel as JSON, else None (and the reason)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        return None, f"the work's return value is not JSON: {error}"
    return value, None


class Worker:
    """A node's worker: claims, works, reports; it resumes whatever is in progress for
    its node that no worker process on this machine works on (`TaskLocks`)."""

    def __init__(
        self,
        api: Api,
        work,
        *,
        idle_seconds: float,
        max_tasks: int | None,
        keep_waiting_when_drained: bool = False,
        locks: TaskLocks | None = None,
    ):
        self.api, self.work = api, work
        self.locks = locks or TaskLocks(default_directory(api.server, api.email))
        self.idle_seconds, self.max_tasks = idle_seconds, max_tasks
        self.stop = threading.Event()  # no new task: the first signal, or a drain
        self.halt = api.halt  # the second signal: drop the task at hand too
        # A first signal was received. Not `stop`: a drain sets that too, and the operator's
        # first SIGTERM to a draining worker then dropped its task instead of finishing it.
        self.signal_seen = threading.Event()
        self.finished = threading.Event()
        self.keep_waiting_when_drained = keep_waiting_when_drained
        self.drain_seen: str | None = None  # the deadline of the drain last logged
        self.heartbeat = Heartbeat(api, self.finished, on_drained=self.drained)
        self.done = 0
        # Tasks whose report the server refused, or that were taken from this worker: not
        # to be resumed. Back in progress for this node, they are another start's attempt
        # (perhaps another process of the node after failover), not this worker's.
        self.refused: set[str] = set()
        self.resume_due = 0.0  # time.monotonic() from which an idle poll looks again

    def drained(self, deadline: str | None) -> None:
        """The node is being drained (`deadline`): finish the task at hand, report it, and
        exit cleanly (the machine can go down for maintenance) unless told to keep waiting.
        None: it is not draining. Each drain is logged, and its end: a worker that keeps
        waiting logged its first drain only, and none of the later ones."""
        if deadline is None:
            if self.drain_seen:
                log("drain_ended", deadline=self.drain_seen)
            self.drain_seen = None
            return
        if deadline != self.drain_seen:
            log("drained", deadline=deadline, keep_waiting=self.keep_waiting_when_drained)
        self.drain_seen = deadline
        if not self.keep_waiting_when_drained:
            self.stop.set()

    def signalled(self) -> None:
        """SIGTERM or Ctrl-C: the first finishes and reports the task at hand, a second
        drops it, whether or not a drain has already stopped the claims."""
        if self.signal_seen.is_set():
            self.halt.set()
            self.heartbeat.cancel_current()
        self.signal_seen.set()
        self.stop.set()

    def run(self) -> None:
        self.heartbeat.start()
        try:
            while not self.stop.is_set() and self.done != self.max_tasks:
                status, payload = self.api.call("POST", "/api/tasks/claim", abort=self.stop)
                task = task_in(payload) if status == 200 else None
                if task is not None:
                    self.refused.discard(task["id"])  # a new attempt, this one's
                    # Not if another process of the node took it up from the list of
                    # tasks in progress between the claim and now: it works on it.
                    if self.locks.take(key_of(task)):
                        self.perform(task)
                    else:
                        log("taken_by_another_process", task=task["id"])
                    continue
                if status == 204:
                    # Nothing pending: anything of ours still in progress is orphaned.
                    if time.monotonic() >= self.resume_due:
                        self.resume_due = time.monotonic() + RESUME_EVERY_SECONDS
                        self.resume()
                else:  # a refusal, or a 200 without a task (a proxy's page, say)
                    message = payload.get("message") or (status == 200 and "no task in the answer")
                    log("claim_refused", status=status, message=message or None)
                self.stop.wait(self.idle_seconds)
        except Stopping:
            pass
        finally:
            self.finished.set()
        log("stopped", done=self.done)

    def resume(self) -> None:
        """Tasks in progress for this node that no process here works on (a claim whose
        answer was lost, a previous run killed mid-task): claim only offers pending ones."""
        status, payload = self.api.call("GET", "/api/tasks/filter/in_progress", abort=self.stop)
        listed_tasks = payload.get("tasks") if status == 200 else None
        for listed in listed_tasks if isinstance(listed_tasks, list) else []:
            if self.stop.is_set() or self.done == self.max_tasks:
                return
            if task_in({"task": listed}) is None:
                continue  # not a task: an answer that is not the server's
            key = key_of(listed)
            if listed["id"] in self.refused or not self.locks.take(key):
                continue  # past its deadline (the sweep will fail it), not ours, or worked on
            # Read again under the lock: a process that held it may have finished it since
            # the list was read, and a new attempt is a new claim's.
            try:
                status, answer = self.api.call("GET", f"/api/tasks/{listed['id']}", abort=self.stop)
            except BaseException:
                self.locks.release(key)
                raise
            task = task_in(answer) if status == 200 else None
            if not task or key_of(task) != key or task.get("status") != "in_progress":
                self.locks.release(key)
                continue
            log("resumed", task=task["id"])
            self.perform(task)

    def perform(self, task: dict) -> None:
        """Work on `task`, whose attempt this process holds (`TaskLocks.take`), and report it."""
        try:
            self._perform(task)
        finally:
            self.locks.release(key_of(task))

    def _perform(self, task: dict) -> None:
        context = Context(self.api, task)
        self.heartbeat.working_on(context)
        log("working", task=task["id"], attempt=context.attempt)
        try:
            result, problem = json_or_none(self.work(task, context))
            outcome = {"taskStatus": "completed", "result": result}
            if problem:
                outcome = {"taskStatus": "failed", "reason": problem[:REASON_LIMIT]}
        except (Exception, SystemExit) as error:
            # sys.exit() in the work (a library's CLI, say) fails the task too: it ended the
            # process with the task in progress, taken up and ended again by the next run.
            # Stopped on request: acknowledged as cancelled (a finished task is reported).
            outcome = {"taskStatus": "cancelled"} if context.cancel_requested else failure(error)
        finally:
            context.close()
            self.heartbeat.working_on(None)
        if context.revoked:
            self.refused.add(context.task_id)
        if context.revoked or (context.cancelled.is_set() and not context.cancel_requested):
            log("dropped", task=task["id"])  # taken away, or the worker halts: say nothing
            return
        self.report(context, outcome)

    def report(self, context: Context, outcome: dict) -> None:
        body = {"taskId": context.task_id, **outcome}
        if context.attempt is not None:
            body["attempt"] = context.attempt
        status, payload = self.api.call("PUT", "/api/tasks/shift-status", body)
        refused = result_refused(status, payload)
        if refused and body.get("result") is not None:
            # Too large, say: the task still ends, failed, with the server's reason.
            reason = f"result refused: {refused}"[:REASON_LIMIT]
            body.update(taskStatus="failed", reason=reason, result=None)
            status, payload = self.api.call("PUT", "/api/tasks/shift-status", body)
        if status == 200:
            self.done += 1
            # A failure's reason in the worker's own log too, not only on the server.
            why = {"reason": body["reason"]} if body.get("reason") else {}
            log(body["taskStatus"], task=context.task_id, **why)
        else:  # 403: taken away meanwhile; 400/409: failed by the sweep, past its deadline, stale
            self.refused.add(context.task_id)
            log(
                "report_refused",
                task=context.task_id,
                status=status,
                message=payload.get("message"),
            )
