"""The nodes' liveness paths, mounted at `api/` beside the tasks paths."""

from django.urls import path

from nodes.views import NodeViewSet

nodes = NodeViewSet.as_view

urlpatterns = [
    path("nodes", nodes({"get": "list_nodes"}), name="node-list"),
    path("nodes/heartbeat", nodes({"post": "heartbeat"}), name="node-heartbeat"),
    path("nodes/<str:nodeId>", nodes({"put": "update_node"}), name="node-detail"),
]
