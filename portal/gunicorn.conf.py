"""gunicorn settings for the portal's metrics: `gunicorn -c portal/gunicorn.conf.py ...` (any
worker class, the WSGI or the ASGI app). Other settings stay on the command line.

With `PROMETHEUS_MULTIPROC_DIR` set (docs/operations.md), every worker writes its counters to
that directory and a scrape adds them up (prometheus-client's multiprocess mode): the directory
is emptied when gunicorn starts (counts of a previous run would be added to this one's), and a
worker that exits is marked dead (its live gauges leave the sums)."""

import os
from pathlib import Path


def on_starting(server):
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
