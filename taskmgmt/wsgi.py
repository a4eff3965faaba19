"""WSGI entry point, used by gunicorn (`taskmgmt.wsgi:application`)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskmgmt.settings")

application = get_wsgi_application()
