"""The ASGI entry point (`portal.asgi`): requests take their thread from those earlier requests
left idle, and the request's signals, the middleware chain and the view run in one call on it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import async_to_sync
from django.core.signals import request_finished, request_started

from portal.asgi import application


async def _get(path: str) -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }  # fmt: skip
    sent: list[dict] = []
    received = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if received:
            return received.pop()
        await asyncio.sleep(3600)  # no disconnect while the response is made

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


@pytest.mark.django_db(transaction=True)
def test_one_request_after_another_is_served_by_the_same_thread():
    threads: list[int] = []

    def started(**kwargs):
        threads.append(threading.get_ident())

    request_started.connect(started)
    try:
        statuses = [async_to_sync(_get)("/healthz") for _ in range(3)]
    finally:
        request_started.disconnect(started)
    assert statuses == [200, 200, 200]
    assert len(threads) == 3 and len(set(threads)) == 1  # no thread started per request


class _CountingExecutor(ThreadPoolExecutor):
    def __init__(self):
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return super().submit(*args, **kwargs)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/healthz", "/api/v1/credits/balance", "/no-such-page/"])
def test_a_request_is_one_hand_off_with_its_signals_on_its_thread(path):
    # Django's handler hands `request_started`, the response and `response.close()` (which
    # sends `request_finished`) to the thread one by one: three hand-offs a request.
    executor = _CountingExecutor()
    application._idle.append(executor)  # the next request's thread
    seen: list[tuple[str, int]] = []

    def started(**kwargs):
        seen.append(("started", threading.get_ident()))

    def finished(**kwargs):
        seen.append(("finished", threading.get_ident()))

    request_started.connect(started)
    request_finished.connect(finished)
    try:
        status = asyncio.run(_get(path))  # no outer async_to_sync: the request's own thread
    finally:
        request_started.disconnect(started)
        request_finished.disconnect(finished)
        if executor in application._idle:  # left idle after the request: not for the next
            application._idle.remove(executor)
        executor.shutdown()
    assert status in (200, 401, 404)
    assert executor.submitted == 1
    thread = executor._threads.pop().ident if executor._threads else None
    assert [name for name, _ in seen] == ["started", "finished"]
    assert {ident for _, ident in seen} == {thread}


def test_the_middleware_chain_is_called_synchronously_in_one_hop():
    # Django's async chain calls each MiddlewareMixin's process_request and process_response in
    # a thread of its own (16 hand-offs per request); this one is a plain call.
    assert not asyncio.iscoroutinefunction(application._middleware_chain)


@pytest.mark.parametrize("entry_point", ["portal.asgi", "portal.wsgi"])
def test_a_loaded_application_has_its_views_imported_and_frozen_out_of_the_collector(entry_point):
    """`portal.startup.web_process_ready`, in a new process as a server starts it."""
    probe = (
        f"import gc, sys; import {entry_point}; "
        "print(gc.get_freeze_count(), 'credits.apis_usage' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"},
    ).stdout.split()  # fmt: skip
    frozen, views_loaded = int(out[-2]), out[-1]
    assert views_loaded == "True"
    assert frozen > 100_000  # Django's and the project's modules (about 157,000 objects)
