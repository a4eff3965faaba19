from django.apps import AppConfig


class TaskmgmtConfig(AppConfig):
    """Project-wide pieces: system checks, logging, the API error format and its schema,
    how MariaDB connections read DATETIMEs."""

    name = "taskmgmt"

    def ready(self):
        from taskmgmt import (
            checks,  # noqa: F401  (registers the checks)
            datetimes,  # noqa: F401  (registers the MariaDB connections' DATETIME reader)
            schema,  # noqa: F401  (registers the schema extension)
        )
