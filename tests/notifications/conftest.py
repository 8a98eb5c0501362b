"""Loopback servers (a webhook receiver that verifies Standard Webhooks signatures, a Twilio
Messages API) and a real Celery worker for the notifications tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import redis
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult
from django.db import connection
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from portal.celery import app
from tests.conftest import TEST_FIELD_ENCRYPTION_KEY

BROKER = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parents[2]


PORTAL = "https://portal.example.test"


@pytest.fixture(autouse=True)
def portal_elsewhere(settings):
    """The portal's own host is refused as a webhook URL: put it elsewhere than the loopback
    receivers."""
    settings.PORTAL_BASE_URL = PORTAL


class Receiver:
    """A webhook receiver on 127.0.0.1: answers `statuses` in turn (then 200), optionally
    sleeping `hang` seconds on the first request; records each request and whether its
    signature verified with `secret` (the standardwebhooks library)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.secret: str | None = None
        self.hang = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    first = not receiver.requests
                    verified = None
                    if receiver.secret:
                        try:
                            Webhook(receiver.secret).verify(body, headers)
                            verified = True
                        except WebhookVerificationError:
                            verified = False
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append(
                        {"headers": headers, "body": body, "verified": verified, "status": status}
                    )
                if first and receiver.hang:
                    time.sleep(receiver.hang)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict]:
        return [r for r in self.requests if r["status"] < 300]

    def wait(self, predicate, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out; requests: {len(self.requests)}")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


class Twilio:
    """Twilio's Messages resource on 127.0.0.1: POST /2010-04-01/Accounts/{sid}/Messages.json,
    form-encoded To/From/Body with basic auth; 201 with the message (its `sid`)."""

    SID, TOKEN = "AC" + "0" * 32, "test-auth-token"

    def __init__(self):
        self.messages: list[dict] = []
        self.fail_with: int | None = None
        twilio = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                auth = "Basic " + b64encode(f"{twilio.SID}:{twilio.TOKEN}".encode()).decode()
                path_ok = self.path == f"/2010-04-01/Accounts/{twilio.SID}/Messages.json"
                form = {k: v[0] for k, v in parse_qs(body).items()}
                if self.headers.get("authorization") != auth:
                    status, reply = 401, {"code": 20003, "message": "Authenticate"}
                elif not path_ok:
                    status, reply = 404, {"code": 20404, "message": "Not found"}
                elif twilio.fail_with:
                    status, reply = twilio.fail_with, {"code": 21211, "message": "Invalid 'To'"}
                else:
                    sid = "SM" + uuid.uuid4().hex
                    twilio.messages.append({**form, "sid": sid})
                    status = 201
                    reply = {"sid": sid, "status": "queued", "to": form.get("To"),
                             "from": form.get("From"), "body": form.get("Body")}  # fmt: skip
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def twilio(settings):
    t = Twilio()
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = t.SID, t.TOKEN
    settings.TWILIO_FROM, settings.TWILIO_API_BASE = "+15005550006", t.base
    yield t
    t.server.shutdown()


class Worker:
    """A real `celery worker` process on a queue of its own (its default queue, so retries it
    queues itself come back to it), against the test database; restartable and killable."""

    def __init__(self, extra_env: dict[str, str]):
        self.queue = f"test-{uuid.uuid4().hex[:8]}"
        db = connection.settings_dict
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "CELERY_BROKER_URL": BROKER,
            "CELERY_RESULT_BACKEND": BROKER,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "FIELD_ENCRYPTION_KEY": TEST_FIELD_ENCRYPTION_KEY,
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
            "PORTAL_BASE_URL": PORTAL,
            "WEBHOOK_RETRY_DELAYS": "1,1,1,1,1,1,1",
            "WEBHOOK_TIMEOUT_SECONDS": "2",
            **extra_env,
        }
        self.broker = self.env["CELERY_BROKER_URL"]  # another Redis (tests/faults) may be given
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo",
             "--concurrency=1", "-Q", self.queue, "--without-gossip", "--without-mingle",
             "--loglevel=WARNING"],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def send(self, task: str, *args):
        with app.connection_for_write(self.broker) as conn:
            return app.send_task(task, args=args, queue=self.queue, connection=conn)

    def run(self, task: str, *args, timeout: float = 60):
        """Send `task` and wait for its result."""
        backend = RedisBackend(app=app, url=self.broker)
        return AsyncResult(self.send(task, *args).id, app=app, backend=backend).get(timeout=timeout)

    def kill(self):
        self.process.kill()
        self.process.wait(timeout=20)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            out = self.process.communicate(timeout=20)[0].decode()
            if self.process.returncode not in (0, -15):
                print(out)


@pytest.fixture
def worker():
    try:
        redis.Redis.from_url(BROKER).ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not reachable at {BROKER}: start redis-server (see .ci/run)")
    workers = []

    def make(**extra_env) -> Worker:
        w = Worker(extra_env)
        w.start()
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.stop()
