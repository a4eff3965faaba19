#!/usr/bin/env python3
"""A worker node built on the worker package (docs/nodes-and-workers.md, The worker package).

    pip install ./worker
    TASKMGMT_PASSWORD=demo-node-pass python3 examples/worker.py \\
        --server http://127.0.0.1:8000 --email node1@example.com

Its work sums a task's `payload` ({"numbers": [...]}, or 1..10 without one), one
number a second, reporting progress and a checkpoint after each: killed mid-way,
the task's next attempt (on any node) resumes from there. The sum is the result.
Every option of `taskmgmt-worker --help` applies; `--work` is this function.
"""

import sys

from taskmgmt_worker import main


def add_up(task, context):
    numbers = (task["payload"] or {}).get("numbers", list(range(1, 11)))
    done = context.checkpoint or {"index": 0, "total": 0}
    index, total = done["index"], done["total"]
    while index < len(numbers):
        if context.cancelled.wait(1):  # taken away, cancelled, or told to stop now
            raise RuntimeError(f"stopped at number {index}")
        total, index = total + numbers[index], index + 1
        percent = 100 * index / len(numbers)
        context.progress(percent, f"{index} of {len(numbers)}", {"index": index, "total": total})
    return {"sum": total, "count": len(numbers)}


if __name__ == "__main__":
    sys.exit(main(["--work", "__main__:add_up", *sys.argv[1:]]))
