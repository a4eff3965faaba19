#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main():
    # Who started this process, read before Django's set-up takes its seconds: a
    # `collect_failed --every` loop ends with that process, even one gone meanwhile.
    os.environ["TASKMGMT_STARTED_BY"] = str(os.getppid())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskmgmt.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        # A missing or wrong setting is for the user to fix, not a bug: one line, exit 1.
        sys.exit(f"manage.py: {error}")


if __name__ == "__main__":
    main()
