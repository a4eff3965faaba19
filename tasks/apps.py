from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks"

    def ready(self):
        from nodes import work
        from taskmgmt.metrics import register_collector
        from tasks import hot_paths, signals  # noqa: F401  (signals: the history handlers)
        from tasks.metrics import DomainCollector
        from tasks.node_work import TaskWork

        register_collector(DomainCollector())
        # What the nodes API and node page show of a node's tasks (nodes.work).
        work.register(TaskWork())
        # Progress reports and task details without Django's plumbing (taskmgmt.hot_paths).
        hot_paths.register_all()


class AdminConfig(admin_apps.AdminConfig):
    """Django's admin app with our site: it opens on the dashboard (tasks.admin_site)."""

    default = False  # named in INSTALLED_APPS; TasksConfig stays this module's default
    default_site = "tasks.admin_site.AdminSite"
