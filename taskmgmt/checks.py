"""System checks for deployment mistakes Django cannot see."""

import django
from django.conf import settings
from django.core.checks import Tags, Warning, register

_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@register(Tags.caches)
def check_shared_rate_limit_cache(app_configs, **kwargs):
    """Rate limits counted per process let each gunicorn worker allow the full rate."""
    backend = settings.CACHES["default"]["BACKEND"]
    if settings.DEBUG or backend not in _LOCAL_CACHES:
        return []
    return [
        Warning(
            "Rate limits are counted in a per-process cache.",
            hint="Set CACHE_URL=redis://127.0.0.1:6379/0 so all workers share one count.",
            id="taskmgmt.W001",
        )
    ]


# The Django series the suite runs on (requirements.txt): taskmgmt.sql leans on its
# private query APIs, which may change in any other.
TESTED_DJANGO = (5, 2)


def django_version_warnings(version: tuple) -> list[Warning]:
    if tuple(version[:2]) == TESTED_DJANGO:
        return []
    tested = ".".join(map(str, TESTED_DJANGO))
    return [
        Warning(
            f"Django {'.'.join(map(str, version[:3]))} is installed; taskmgmt is tested on "
            f"{tested}.x.",
            hint=(
                f"Install Django {tested}.x (requirements.txt), or run the whole suite on this "
                "version first: taskmgmt/sql.py uses Django's private query APIs."
            ),
            id="taskmgmt.W002",
        )
    ]


@register(Tags.compatibility)
def check_tested_django(app_configs, **kwargs):
    return django_version_warnings(django.VERSION)
