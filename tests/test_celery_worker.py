"""Task paths on a real Celery worker over Redis, against the test database."""

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult
from django.conf import settings
from django.db import connection
from django.utils import timezone

from credits.models import CreditLot, Hold, LedgerAccount
from credits.services import hold_authorize, spending_account
from credits.verify import ledger_verify
from portal.celery import app

BROKER = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker():
    """A real `celery worker` process on its own queue, using the test database."""
    try:
        redis.Redis.from_url(BROKER).ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not reachable at {BROKER}: start redis-server (see .ci/run)")
    queue = f"test-{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": BROKER,
        "CELERY_RESULT_BACKEND": BROKER,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),  # the test's storage (generated PDFs)
        "CELERY_TASK_DEFAULT_QUEUE": queue,  # tasks the worker's own tasks queue come back to it
        "FIELD_ENCRYPTION_KEY": ",".join(settings.FIELD_ENCRYPTION_KEY),  # secrets at rest
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    saved = {k: app.conf[k] for k in ("broker_url", "result_backend", "task_always_eager")}
    app.conf.update(broker_url=BROKER, result_backend=BROKER, task_always_eager=False)
    backend = RedisBackend(app=app, url=BROKER)  # the app's own may be cached from eager mode

    def run(task: str, *args):
        # An explicit connection: the app may have cached another broker while tasks ran eagerly.
        with app.connection_for_write(BROKER) as connection:
            sent = app.send_task(task, args=args, queue=queue, connection=connection)
        return AsyncResult(sent.id, app=app, backend=backend).get(timeout=60)

    run.queue = queue  # for tasks the code under test sends itself

    try:
        yield run
    finally:
        app.conf.update(saved)
        process.terminate()
        output = process.communicate(timeout=20)[0].decode()
        if process.returncode not in (0, -15):
            print(output)


@pytest.mark.django_db(transaction=True)
def test_beat_tasks_release_expired_holds_and_expire_lots_on_a_real_worker(tenant, worker):
    pool = spending_account(tenant.org, None)
    tenant.grant("5", expires_at=timezone.now() + timedelta(days=1))
    tenant.grant("3")
    hold, _ = hold_authorize(account=pool, amount="2", idempotency_key="h1")
    Hold.objects.filter(pk=hold.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    released = worker("credits.tasks.holds_expire")
    assert released == 1
    hold.refresh_from_db()
    pool.refresh_from_db()
    assert hold.status == Hold.Status.EXPIRED and pool.held == 0

    CreditLot.objects.filter(expires_at__isnull=False).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert worker("credits.tasks.lots_expire") == 1
    pool.refresh_from_db()
    assert pool.balance == Decimal("3")
    expiry = LedgerAccount.objects.get(organization=tenant.org, kind="expiry")
    assert sum(e.amount for e in expiry.entries.all()) == Decimal("5")
    assert worker("credits.tasks.ledger_verify") == 0
    assert ledger_verify() == []


@pytest.mark.django_db(transaction=True)
def test_monthly_statements_and_their_pdf_on_a_real_worker(tenant, worker):
    """The hourly beat task generates last month's statement (the organization existed then)
    and queues its PDF after commit; the worker renders it with WeasyPrint and stores it where
    the web reads it (a PDF task sent afterwards finds it stored)."""
    from billing.models import Statement
    from billing.services.statements import previous_month

    tenant.org.created_at = timezone.now() - timedelta(days=70)
    tenant.org.save()
    assert worker("billing.tasks.statements_generate_due") == 1
    assert worker("billing.tasks.statements_generate_due") == 0
    statement = Statement.objects.get(organization=tenant.org)
    assert (statement.year, statement.month) == previous_month(tenant.org)
    assert worker("billing.tasks.document_pdf_render", "statement", statement.pk) is False
    statement.refresh_from_db()
    with statement.pdf.storage.open(statement.pdf.name, "rb") as f:
        assert f.read().startswith(b"%PDF-")
