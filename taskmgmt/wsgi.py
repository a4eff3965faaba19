"""WSGI entry point, used by gunicorn (`taskmgmt.wsgi:application`)."""

import os

from django.core.wsgi import get_wsgi_application

from taskmgmt import hot_paths

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskmgmt.settings")

# A node's hot requests skip Django's plumbing; the rest reach Django (taskmgmt.hot_paths).
application = hot_paths.HotPaths(get_wsgi_application())
