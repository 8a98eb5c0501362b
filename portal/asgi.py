"""The ASGI entry point: the whole portal, served by an ASGI server (gunicorn with uvicorn
workers, README "Running in production"). Pages and the API run as under WSGI (synchronous views,
one thread per request); the gateway's streams (`POST /api/v1/chat/completions` with
`stream: true`) run on the event loop with httpx's async client, so an open stream holds no worker
and no thread while it waits for the upstream.

`ReusedThreadsHandler` is Django's `ASGIHandler` with three changes, all for the cost of a request:
- The middleware chain is built synchronous and called, with the view, in one hand-off to the
  request's thread. Django's async chain calls each `MiddlewareMixin` middleware's
  `process_request` and `process_response` through `sync_to_async`: 16 hand-offs between the
  event loop and a thread for every request through this project's middleware.
- A request's thread is taken from those earlier requests left idle (asgiref's
  `ThreadSensitiveContext(executor=...)`, whose caller owns the executor) instead of started for
  it and stopped after it: one request at a time each, as a WSGI server's threads. What a thread
  keeps (its database connection's wrapper, per-thread serializers) serves the next request.
- The request's signals go with it: `request_started` is sent on the request's thread just before
  the middleware chain, and a response that is not streamed is closed there right after it is
  made (`request_finished`: database connections back to the pool, caches closed), before its
  bytes are sent. Django's handler makes a hand-off of its own for each (three per request);
  here a request is one hand-off, and a streamed response (the gateway's streams, files) is
  closed after it is sent, as Django does. A client that disconnects while its request runs
  still stops the request's task (Django's disconnect listener).
Measured with one client posting usage events to one worker (wrk, docs/performance.md): 14.3 ms
a request with Django's handler, 7.9 ms with the first two changes (7.3 ms under a WSGI worker).
The third, in one process, 16 clients, interleaved rounds (docs/performance.md, run 14): 1.90 to
1.29 ms of CPU a request for `/healthz`, 5.19 to 4.50 ms for a usage event."""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.urls import set_script_prefix

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
        """`request_started`, the middleware chain and the view, and `close` of a response that
        is not streamed, in one call on the request's thread."""
        return await sync_to_async(self._respond, thread_sensitive=True)(request)

    def _respond(self, request):
        signals.request_started.send(sender=self.__class__, scope=request.scope)
        response = self.get_response(request)
        if not response.streaming:
            response.close()  # its content is made: `request_finished` now, not after a hop
        return response

    async def handle(self, scope, receive, send):
        """Django's `ASGIHandler.handle` (5.2), with `request_started` and the closing of a
        response that is not streamed moved into the request's one hand-off (`_respond`)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await signals.request_started.asend(sender=self.__class__, scope=scope)
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request(request, send):
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client disconnected while it was sent
            return response

        # As Django: a disconnect while the response is made stops its task.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            if response.streaming:
                await sync_to_async(response.close)()
        body_file.close()

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
