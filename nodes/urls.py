"""The nodes' liveness paths, mounted at `api/` beside the tasks paths."""

from django.urls import path

from nodes.views import NodeViewSet

nodes = NodeViewSet.as_view

urlpatterns = [
    path("nodes", nodes({"get": "list_nodes"}), name="node-list"),
    path("nodes/heartbeat", nodes({"post": "heartbeat"}), name="node-heartbeat"),
    path("nodes/<str:nodeId>", nodes({"put": "update_node"}), name="node-detail"),
    path("nodes/<str:nodeId>/cordon", nodes({"post": "cordon"}), name="node-cordon"),
    path("nodes/<str:nodeId>/drain", nodes({"post": "drain"}), name="node-drain"),
    path("nodes/<str:nodeId>/uncordon", nodes({"post": "uncordon"}), name="node-uncordon"),
    path("nodes/<str:nodeId>/events", nodes({"get": "events"}), name="node-events"),
    path(
        "nodes/<str:nodeId>/maintenance",
        nodes({"get": "maintenance_list", "post": "maintenance_schedule"}),
        name="node-maintenance",
    ),
    path(
        "nodes/<str:nodeId>/maintenance/<str:windowId>",
        nodes({"delete": "maintenance_cancel"}),
        name="node-maintenance-window",
    ),
]
