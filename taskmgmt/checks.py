"""System checks for deployment mistakes Django cannot see."""

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
