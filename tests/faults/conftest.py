"""Services the fault tests start, stop and restart themselves: a PostgreSQL cluster of their own
(`initdb`/`pg_ctl` of PostgreSQL 15, on a free loopback port, never the machine's shared one), a
`redis-server` on another port, and the production server (gunicorn with uvicorn workers,
`portal.asgi`) against a database on that cluster.

PostgreSQL refuses to run as root: when the tests run as root (CI), the cluster's directory is
given to the `postgres` user and its commands run through `runuser -u postgres --`."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """A throwaway PostgreSQL cluster in `directory` on 127.0.0.1:`port` (trust auth, user
    `postgres`, fsync off: its data is thrown away). `restart()` is `pg_ctl restart -m fast`:
    every open connection is cut, transactions in flight are rolled back."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            postgres = pwd.getpwnam("postgres")
            os.chown(directory, postgres.pw_uid, postgres.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]}: {done.stderr or done.stdout}\n{self.log_text()}")

    def _ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
            "-o", options, action, *extra,
        )  # fmt: skip

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str = "template1") -> str:
        """CREATE DATABASE `name` as a copy of `template` (a file copy: no migrations to run)."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture(scope="module")
def postgres_cluster():
    """A PostgreSQL cluster of this module's own, started; stopped and removed afterwards. Its
    directory is not under pytest's temporary directory, which the `postgres` user cannot enter."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL's initdb is not at {PG_BIN} (set PG_BIN)")
    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="portal-pg-")))
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        except RuntimeError:
            pass
        shutil.rmtree(cluster.directory, ignore_errors=True)


class RedisServer:
    """`redis-server` on 127.0.0.1:`port`, no persistence; `stop()` and `start()` again on the
    same port (what a client sees of a Redis restart: refused connections, then an empty one)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis.from_url(self.url(), socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path_factory):
    """A redis-server of this test's own, started; stopped afterwards."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


# The org, team, prices, grant and usage key of a fresh database, made in one process (one Django
# start instead of one per manage.py command). Prints {"secret": ...} on its last line.
SETUP_SCRIPT = """
import io, json, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", "--noinput", verbosity=0)
call_command("prices_load", stdout=io.StringIO())
call_command("org_create", "faults", "--name", "Faults", "--owner", "owner@faults.example",
             stdout=io.StringIO())
call_command("team_create", "faults", "load", "--name", "Load", "--funding", "pool",
             stdout=io.StringIO())
call_command("credits_grant", "faults", sys.argv[1], "--idempotency-key", "faults:grant",
             stdout=io.StringIO())
out = io.StringIO()
call_command("apikey_create", "faults", "--kind", "usage", "--team", "load", stdout=out)
print(json.dumps({"secret": out.getvalue().strip().splitlines()[-1]}))
"""


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    from tests.conftest import TEST_FIELD_ENCRYPTION_KEY

    environment = dict(os.environ)
    environment.pop("DATABASE_POOL_MAX_SIZE", None)  # the tests' own (pyproject): production's
    return {
        **environment,
        "DATABASE_URL": database_url,
        "DEBUG": "0",
        "SECRET_KEY": "faults-test-secret-key",
        "SECURE_SSL_REDIRECT": "0",
        "FIELD_ENCRYPTION_KEY": TEST_FIELD_ENCRYPTION_KEY,
        "CELERY_BROKER_URL": "",
        "LOG_LEVEL": "ERROR",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        **extra,
    }


def database_setup(env: dict[str, str], credits: str) -> str:
    """Migrate the database of `env`, make the org `faults` (team `load` on the pool, `credits`
    granted) and a usage key bound to the team; the key's secret."""
    done = subprocess.run(
        [sys.executable, "-c", SETUP_SCRIPT, credits],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"setup failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["secret"]


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


class Server:
    """The production server, `gunicorn portal.asgi:application -k uvicorn_worker.UvicornWorker`
    (or with `asgi=False` `gunicorn portal.wsgi` with sync workers), on a free loopback port with
    `env`; its output in `log`."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = 2, asgi: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        app = ["portal.asgi:application", "-k", "uvicorn_worker.UvicornWorker"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *(app if asgi else ["portal.wsgi"]),
             "-w", str(workers), "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "2",
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait(self, secret: str, timeout: float = 40) -> None:
        """Until an API read answers 200 (every worker has booted once it does twice)."""
        deadline = time.monotonic() + timeout
        answered = 0
        while answered < 2:
            try:
                response = httpx.get(
                    self.url + "/api/v1/credits/balance",
                    headers={"Authorization": f"Bearer {secret}"},
                    timeout=2,
                )
                answered += response.status_code == 200
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start:\n" + self.log.read_text())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
