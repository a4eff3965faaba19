from django.apps import AppConfig


class NodesConfig(AppConfig):
    """A node's life: liveness, heartbeats, the nodes API, the node admin and page."""

    name = "nodes"
    verbose_name = "Nodes"

    def ready(self):
        from nodes import hot_paths

        # The heartbeat without Django's request plumbing (taskmgmt.hot_paths).
        hot_paths.register_all()
