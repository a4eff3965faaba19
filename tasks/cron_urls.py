"""The original's cron trigger, mounted at `cron/`; now for admins only."""

from django.urls import path

from tasks.views import CollectFailedViewSet

urlpatterns = [
    path(
        "collect-failed",
        CollectFailedViewSet.as_view({"get": "collect", "post": "collect"}),
        name="collect-failed",
    ),
]
