"""Fail every open task whose deadline passed and, with FAILOVER=reassign, move the
open tasks of down nodes to alive ones. Crontab runs this every minute; `make run`
runs it in a loop (`--every`)."""

import logging
import os
import signal
import sys
import time
import traceback

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections, reset_queries
from django.utils import timezone

from tasks.selectors import last_stranded_count
from tasks.services import FailoverCounts, sweep_preview, sweep_run

logger = logging.getLogger("taskmgmt.sweep")

# A batch's ids travel as statement parameters; SQLite allows 32,766 per statement.
MAX_BATCH_SIZE = 20_000


class Command(BaseCommand):
    help = (
        "Mark active pending/in_progress tasks whose deadline has passed as failed; with "
        "FAILOVER=reassign, also move the open tasks of down nodes to alive ones."
    )
    # Cron runs this every minute and mails what it prints: configuration warnings
    # are `manage.py check`'s to report at deploy time, not once a minute.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=settings.SWEEP_BATCH_SIZE,
            help="Tasks failed per transaction (default: %(default)s).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count the expired tasks, change nothing."
        )
        parser.add_argument(
            "--every",
            type=float,
            metavar="SECONDS",
            help="Sweep again every SECONDS until stopped (SIGTERM, Ctrl-C) or the "
            "process that started it ends: the sweep of `make run`.",
        )

    def handle(self, *args, batch_size, dry_run, verbosity, every=None, **options):
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise CommandError(f"--batch-size must be at least 1 and at most {MAX_BATCH_SIZE}.")
        if every is None:
            self.sweep(batch_size=batch_size, dry_run=dry_run, verbosity=verbosity)
            return
        if every <= 0:
            raise CommandError("--every must be a number of seconds above 0.")
        self.loop(every, batch_size=batch_size, dry_run=dry_run, verbosity=verbosity)

    def loop(self, every, **sweep):
        """Sweeps until told to stop; a failed run is reported and the next one tried."""
        # manage.py reads the parent first thing (a slow start could outlast it).
        parent = int(os.environ.get("TASKMGMT_STARTED_BY") or os.getppid())
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            # A parent that died without stopping us (make killed) leaves us to init.
            while os.getppid() == parent:
                close_old_connections()
                try:
                    self.sweep(**sweep)
                except CommandError as error:
                    self.stderr.write(str(error))
                time.sleep(every)
        except KeyboardInterrupt:
            pass

    def sweep(self, *, batch_size, dry_run, verbosity):
        progress = Progress(self.stdout, verbosity=verbosity, batch_size=batch_size)
        started = time.perf_counter()
        failover = settings.FAILOVER == "reassign"
        preview = causes = None
        # Stranded tasks are reported when their number changes, not on every run (cron
        # would mail the same warning every minute): the last recorded run's count.
        quiet = StrandedChanged()
        logger.addFilter(quiet)
        try:
            reported = quiet.last = None if dry_run else last_stranded_count()
            if dry_run:
                preview = sweep_preview(now=timezone.now())
                count, cancelled = preview.failed, preview.cancelled
                causes = failed_by_cause(count - preview.drained_failed, 0, preview.drained_failed)
                # What would move: off drained nodes, and down nodes' tasks to fail over.
                moving = preview.drain_moved + preview.failover_open
                result = FailoverCounts(reassigned=moving, held=preview.held)
            else:
                # `result`: the moves and failures of drains and failover alike.
                run, result = sweep_run(batch_size=batch_size, on_batch=progress.batch_done)
                count, cancelled = run.failed_count, run.cancel_timeout_cancelled
                causes = failed_by_cause(
                    run.deadline_failed, run.node_lost_failed, run.drained_failed
                )
        except DatabaseError as error:
            progress.end_line()
            logger.error(
                "sweep failed",
                extra={"event": "sweep", "failed_count": progress.done, "error": str(error)},
            )
            raise CommandError(
                f"The sweep stopped on a database error after failing {progress.done} task(s):"
                f" {error}"
            ) from error
        finally:
            logger.removeFilter(quiet)
        elapsed = time.perf_counter() - started
        progress.end_line()
        # A run with nothing to do logs below the default LOG_LEVEL: cron mails output.
        stranded = 0 if result.stranded == reported else result.stranded
        idle = not (count or cancelled or result.reassigned or stranded)
        logger.log(
            logging.DEBUG if idle else logging.INFO,
            "sweep finished",
            extra={
                "event": "sweep",
                "failed_count": count,
                "cancelled_count": cancelled,
                **(
                    {"reassigned_count": result.reassigned} if failover or result.reassigned else {}
                ),
                "dry_run": dry_run,
                "batch_size": batch_size,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )
        if failover:
            self.report_failover(count, causes, result, stranded, preview, verbosity, elapsed)
        elif (count and verbosity > 0) or verbosity > 1:
            verb = "would fail" if dry_run else "failed"
            self.stdout.write(f"{verb} {failed_phrase(count, causes)} in {elapsed:.2f}s")
        # A real run with failover counts a drain's moves among those it reassigned.
        off_drained = preview.drain_moved if dry_run else 0 if failover else result.reassigned
        if off_drained and verbosity > 0:
            verb = "would move" if dry_run else "moved"
            self.stdout.write(f"{verb} {off_drained} task(s) off drained node(s)")
        if result.unplaced and verbosity > 0:
            # A drained node's as well as a down node's: failed once, never left in place.
            self.stderr.write(
                f"{result.unplaced} task(s) failed for a human, counted among the failed: no"
                " alive node may take them (none is, or none matches their nodeSelector),"
                " or they are pinned to their node (a broadcast's)"
            )
        if cancelled and verbosity > 0:
            verb = "would cancel" if dry_run else "cancelled"
            self.stdout.write(
                f"{verb} {cancelled} task(s) whose cancel request went unanswered for"
                f" CANCEL_GRACE_SECONDS={settings.CANCEL_GRACE_SECONDS}"
            )

    def report_failover(self, count, causes, result, stranded, preview, verbosity, elapsed):
        dry_run = preview is not None
        # A dry run's drain moves have a line of their own.
        moving = preview.failover_open if dry_run else result.reassigned
        if ((count or moving or stranded) and verbosity > 0) or verbosity > 1:
            if dry_run:
                self.stdout.write(
                    f"would fail {failed_phrase(count, causes)}; "
                    f"{moving} open task(s) of down nodes to fail over"
                )
            else:
                self.stdout.write(
                    f"failed {failed_phrase(count, causes)}, "
                    f"reassigned {result.reassigned} in {elapsed:.2f}s"
                )
        if result.held and verbosity > 0:
            self.stderr.write(
                f"{result.held} recently alive node(s) down at once, more than"
                f" FAILOVER_MAX_DOWN_SHARE={settings.FAILOVER_MAX_DOWN_SHARE}:"
                f" {'would fail' if dry_run else 'failed'} none over"
            )
        if stranded and verbosity > 0:
            self.stderr.write(
                f"no alive schedulable node to take {stranded} task(s) of down nodes: left in place"
            )


def failed_by_cause(deadline: int, node_lost: int, drained: int) -> dict:
    """A run's failures by cause, those it had only: {"deadline": 2, "drained": 1}."""
    counts = {"deadline": deadline, "node lost": node_lost, "drained": drained}
    return {cause: n for cause, n in counts.items() if n}


def failed_phrase(count: int, causes: dict) -> str:
    """'2 expired task(s)' when the deadline was every cause, else by cause:
    '3 task(s) (deadline: 2, drained: 1)'."""
    if set(causes) <= {"deadline"}:
        return f"{count} expired task(s)"
    return f"{count} task(s) (" + ", ".join(f"{c}: {n}" for c, n in causes.items()) + ")"


class StrandedChanged(logging.Filter):
    """Lets a `failover_stranded` warning through only when its count is not `last`."""

    def __init__(self):
        super().__init__()
        self.last = None

    def filter(self, record):
        if getattr(record, "event", None) != "failover_stranded":
            return True
        return record.stranded_count != self.last


class Progress:
    """Per-batch lines with -v 2; on a terminal, one line rewritten in place once
    a run needs more than one batch."""

    def __init__(self, stdout, *, verbosity: int, batch_size: int):
        self.stdout, self.verbosity, self.batch_size = stdout, verbosity, batch_size
        self.done = 0
        self.line_open = False

    def batch_done(self, count: int) -> None:
        self.done += count
        # With DEBUG on, Django keeps every statement, and a batch's are large.
        reset_queries()
        if self.verbosity > 1:
            self.stdout.write(f"batch: failed {count} (total {self.done})")
        elif self.verbosity > 0 and self.done > self.batch_size and self.stdout.isatty():
            self.stdout.write(f"\rfailed {self.done} so far…", ending="")
            self.stdout.flush()
            self.line_open = True

    def end_line(self) -> None:
        if self.line_open:
            self.stdout.write("")
            self.line_open = False


def run_from_crontab() -> None:
    """The job django-crontab runs (settings.CRONJOBS).

    `manage.py crontab run` logs a job's exception and still exits 0, even on
    SystemExit; a failed sweep must exit non-zero so cron's log and mail show it.
    """
    try:
        call_command("collect_failed")
    except Exception as error:
        if isinstance(error, CommandError):
            sys.stderr.write(f"collect_failed: {error}\n")
        else:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(1)
