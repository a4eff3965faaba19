"""taskmgmt-worker: a worker node for taskmgmt, standard library only.

    taskmgmt-worker --server URL --email NODE --work module:function

The work function is called as `function(task, context)`: `task` is the task's JSON
object (with its `payload` and the last `checkpoint`), `context` has
`progress(percent, message=None, checkpoint=None)` and `cancelled` (a threading.Event).
Its return value becomes the task's result; an exception fails the task, with the
exception as the reason and its traceback as the result.
"""

from taskmgmt_worker.cli import main, run_worker
from taskmgmt_worker.client import Api, LoginRefused, Stopping
from taskmgmt_worker.worker import Context, Heartbeat, Worker, sleep_work

__all__ = [
    "Api",
    "Context",
    "Heartbeat",
    "LoginRefused",
    "Stopping",
    "Worker",
    "main",
    "run_worker",
    "sleep_work",
]
