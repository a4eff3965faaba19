from django.apps import AppConfig


class NodesConfig(AppConfig):
    """A node's life: liveness, heartbeats, the nodes API, the node admin and page."""

    name = "nodes"
    verbose_name = "Nodes"
