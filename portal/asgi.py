"""The ASGI entry point: the whole portal, served by an ASGI server (gunicorn with uvicorn
workers, README "Running in production"). Pages and the API run as under WSGI (synchronous views,
one thread per request); the gateway's streams (`POST /api/v1/chat/completions` with
`stream: true`) run on the event loop with httpx's async client, so an open stream holds no worker
and no thread while it waits for the upstream.

Database connections are not persistent here (`CONN_MAX_AGE` 0 unless the environment says
otherwise): under ASGI every request runs its synchronous code in a thread of its own (asgiref's
`ThreadSensitiveContext`), so a connection kept for the next request is never reused and stays
open until the garbage collector finds it; under load they pile up to PostgreSQL's
`max_connections` ("too many clients", tests/faults/test_postgres_restart.py). Django's
documentation says the same: disable persistent connections under ASGI."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("CONN_MAX_AGE", "0")  # read by portal.settings: see above

application = get_asgi_application()
