"""The WSGI entry point (`gunicorn portal.wsgi`); production serves `portal.asgi` (README)."""

import os

from django.core.wsgi import get_wsgi_application

from portal.startup import web_process_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()
web_process_ready()
