from django.contrib import admin
from django.urls import URLResolver, include, path, re_path
from django.views.generic import RedirectView

from taskmgmt import metrics, views

admin.site.site_header = "taskmgmt administration"
admin.site.site_title = "taskmgmt"
# The project has no public site for "View site" to open.
admin.site.site_url = None


class OptionalTrailingSlash:
    """A URL pattern that also matches its path with one trailing slash added or removed.

    The original ran on Express, which ignores one trailing slash, so its clients send
    both spellings; a redirect would drop a PUT's or POST's body. Reversing a URL still
    gives the pattern's own spelling.
    """

    def __init__(self, pattern):
        self.pattern = pattern

    def match(self, path):
        other = path.removesuffix("/") if path.endswith("/") else f"{path}/"
        return self.pattern.match(path) or self.pattern.match(other)

    def __getattr__(self, name):
        return getattr(self.pattern, name)

    def __str__(self):
        return str(self.pattern)


def slash_optional(entry):
    """Makes every endpoint under `entry` (a pattern or an include) slash-optional."""
    if isinstance(entry, URLResolver):
        for child in entry.url_patterns:
            slash_optional(child)
    elif not isinstance(entry.pattern, OptionalTrailingSlash):
        entry.pattern = OptionalTrailingSlash(entry.pattern)


ADMIN = path("admin/", admin.site.urls)

urlpatterns = [
    ADMIN,
    path("api/auth/", include("accounts.urls")),
    path("api/auth/", include("tasks.profile_urls")),
    path("api/", include("nodes.urls")),
    path("api/", include("tasks.urls")),
    path("cron/", include("tasks.cron_urls")),
    path("api/schema/", views.SchemaView.as_view(), name="schema"),
    path("api/docs/", views.DocsView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", views.RedocView.as_view(url_name="schema"), name="redoc"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("metrics", metrics.metrics_view, name="metrics"),
    # No public site: the front door is the admin's dashboard (its login when signed out).
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("api/", views.ApiRootViewSet.as_view({"get": "greet"}), name="api-root"),
    # Last: any other path under /api/ answers a JSON 404, even with DEBUG on.
    re_path(r"^api/", views.api_not_found, name="api-not-found"),
]

# Every route but the admin's, including any added above later: the admin keeps
# Django's own spelling (and APPEND_SLASH's redirect for GET pages).
for entry in urlpatterns:
    if entry is not ADMIN:
        slash_optional(entry)

handler400 = views.bad_request
handler404 = views.not_found
handler500 = views.server_error
