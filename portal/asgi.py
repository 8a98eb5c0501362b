"""The ASGI entry point: the whole portal, served by an ASGI server (gunicorn with uvicorn
workers, README "Running in production"). Pages and the API run as under WSGI (synchronous views,
one thread per request); the gateway's streams (`POST /api/v1/chat/completions` with
`stream: true`) run on the event loop with httpx's async client, so an open stream holds no worker
and no thread while it waits for the upstream."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

application = get_asgi_application()
