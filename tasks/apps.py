from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks"

    def ready(self):
        from taskmgmt.metrics import register_collector
        from tasks import signals  # noqa: F401  (connects the history handlers)
        from tasks.metrics import DomainCollector

        register_collector(DomainCollector())


class AdminConfig(admin_apps.AdminConfig):
    """Django's admin app with our site: it opens on the dashboard (tasks.dashboard)."""

    default = False  # named in INSTALLED_APPS; TasksConfig stays this module's default
    default_site = "tasks.dashboard.AdminSite"
