"""Fail every open task whose deadline passed. Crontab runs this every minute."""

import logging
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from tasks.models import Task
from tasks.services import tasks_expire

logger = logging.getLogger("taskmgmt.sweep")


class Command(BaseCommand):
    help = "Mark active pending/in_progress tasks whose deadline has passed as failed."

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

    def handle(self, *args, batch_size, dry_run, verbosity, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        now = timezone.now()
        started = time.perf_counter()
        try:
            if dry_run:
                count = Task.objects.expired(now).count()
            else:
                count = tasks_expire(
                    batch_size=batch_size, now=now, on_batch=self._progress(verbosity)
                )
        except DatabaseError as error:
            logger.error("sweep failed", extra={"event": "sweep", "error": str(error)})
            raise CommandError(f"The database could not be reached: {error}") from error
        elapsed = time.perf_counter() - started
        logger.info(
            "sweep finished",
            extra={
                "event": "sweep",
                "failed_count": count,
                "dry_run": dry_run,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )
        if count or verbosity > 1:
            verb = "would fail" if dry_run else "failed"
            self.stdout.write(f"{verb} {count} expired task(s) in {elapsed:.2f}s")

    def _progress(self, verbosity):
        done = 0
        interactive = self.stdout.isatty()

        def report(batch_count):
            nonlocal done
            done += batch_count
            if verbosity > 1:
                self.stdout.write(f"batch: failed {batch_count} (total {done})")
            elif interactive and verbosity > 0:
                sys.stdout.write(f"\rfailed {done} so far…")
                sys.stdout.flush()

        return report
