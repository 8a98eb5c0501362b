"""The beat schedule lives in the database (django-celery-beat): `beat_schedule_sync` writes the
portal's periodic tasks there, the outbox sweep included, and is idempotent."""

import pytest
from django.conf import settings
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

pytestmark = pytest.mark.django_db


def test_beat_schedule_sync_writes_the_portal_schedule():
    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"
    call_command("beat_schedule_sync")
    call_command("beat_schedule_sync")
    tasks = {t.name: t for t in PeriodicTask.objects.filter(name__startswith="portal: ")}
    assert set(tasks) == {f"portal: {name}" for name in settings.CELERY_BEAT_SCHEDULE}
    sweep = tasks["portal: outbox-sweep"]
    assert sweep.task == "notifications.tasks.outbox_sweep" and sweep.interval.every == 60
    prices = tasks["portal: prices-sync"]
    assert prices.crontab.minute == "23" and prices.crontab.hour == "*/6"
