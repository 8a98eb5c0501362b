"""The ASGI entry point: the whole portal, served by an ASGI server (gunicorn with uvicorn
workers, README "Running in production"). Pages and the API run as under WSGI (synchronous views,
one thread per request); the gateway's streams (`POST /api/v1/chat/completions` with
`stream: true`) run on the event loop with httpx's async client, so an open stream holds no worker
and no thread while it waits for the upstream.

`ReusedThreadsHandler` is Django's `ASGIHandler` with two changes, both for the cost of a request:
- The middleware chain is built synchronous and called, with the view, in one hand-off to the
  request's thread. Django's async chain calls each `MiddlewareMixin` middleware's
  `process_request` and `process_response` through `sync_to_async`: 16 hand-offs between the
  event loop and a thread for every request through this project's middleware.
- A request's thread is taken from those earlier requests left idle (asgiref's
  `ThreadSensitiveContext(executor=...)`, whose caller owns the executor) instead of started for
  it and stopped after it: one request at a time each, as a WSGI server's threads. What a thread
  keeps (its database connection's wrapper, per-thread serializers) serves the next request.
Measured with one client posting usage events to one worker (wrk, docs/performance.md): 14.3 ms
a request with Django's handler, 7.9 ms with this one (7.3 ms under a WSGI worker)."""

import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler

from portal.startup import web_process_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

IDLE_THREADS_KEPT = 64  # beyond this many idle at once, a request's thread ends with it


class ReusedThreadsHandler(ASGIHandler):
    """`ASGIHandler` whose requests run their synchronous parts on reused threads (one request
    at a time each; see the module docstring)."""

    def __init__(self):
        base.BaseHandler.__init__(self)  # not ASGIHandler's: its middleware chain is async
        self.load_middleware(is_async=False)
        self._idle: list[ThreadPoolExecutor] = []  # touched on the event loop only

    async def get_response_async(self, request):
        """The middleware chain and the view in one call on the request's thread."""
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(max_workers=1)
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if len(self._idle) < IDLE_THREADS_KEPT:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)


def _application() -> ReusedThreadsHandler:
    import django

    django.setup(set_prefix=False)
    handler = ReusedThreadsHandler()
    web_process_ready()
    return handler


application = _application()
