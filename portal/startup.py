"""What a web process does once its application is loaded, before its first request
(`portal.asgi`, `portal.wsgi`)."""

import gc

from django.urls import get_resolver


def web_process_ready() -> None:
    """Import every view (the URLconf, which Django otherwise loads on the first request), then
    move everything allocated so far into the cyclic garbage collector's permanent generation
    (`gc.freeze()`, Python's `gc` documentation).

    The modules and their objects live as long as the process; a full collection no longer
    walks them. Without this, a batch of 1,000 usage events, whose rows survive long enough to
    reach the oldest generation, set off a full collection every few batches, each about 100 ms
    of a worker's CPU; with it, a batch's mean CPU fell by about a fifth (docs/performance.md,
    "What bounds them")."""
    get_resolver().url_patterns  # noqa: B018 (imports the URLconf and with it the views)
    gc.freeze()
