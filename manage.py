#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import atexit
import os
import sys


def main():
    # Who started this process, read before Django's set-up takes its seconds: a
    # `collect_failed --every` loop ends with that process, even one gone meanwhile.
    os.environ["TASKMGMT_STARTED_BY"] = str(os.getppid())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskmgmt.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    # This process's metric files are folded into the archives as it exits, or a
    # sweep run a minute leaves two more a run (taskmgmt/metrics_files.py). atexit:
    # after the last thread that may count has ended.
    atexit.register(compact_metric_files)
    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        # A missing or wrong setting is for the user to fix, not a bug: one line, exit 1.
        sys.exit(f"manage.py: {error}")


def compact_metric_files():
    # Imported only now: prometheus_client picks its mode as it is imported, which
    # taskmgmt.metrics settles first (a PROMETHEUS_MULTIPROC_DIR that cannot be made).
    from taskmgmt.metrics_files import compact_at_exit

    compact_at_exit()


if __name__ == "__main__":
    main()
