from django.apps import AppConfig


class TaskmgmtConfig(AppConfig):
    """Project-wide pieces: system checks, logging, the API error format."""

    name = "taskmgmt"

    def ready(self):
        from taskmgmt import checks  # noqa: F401  (registers the checks)
