from django.contrib import admin
from django.urls import include, path, re_path

from taskmgmt import api

admin.site.site_header = "taskmgmt administration"
admin.site.site_title = "taskmgmt"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/", include("accounts.urls")),
    path("api/", include("accounts.node_urls")),
    path("api/", include("tasks.urls")),
    path("cron/", include("tasks.cron_urls")),
    path("api/schema/", api.SchemaView.as_view(), name="schema"),
    path("api/docs/", api.DocsView.as_view(url_name="schema"), name="docs"),
    path("healthz", api.healthz, name="healthz"),
    # Last: any other path under /api/ answers a JSON 404, even with DEBUG on.
    re_path(r"^api/", api.api_not_found),
]

handler400 = api.bad_request
handler404 = api.not_found
handler500 = api.server_error
