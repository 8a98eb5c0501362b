"""Write the portal's periodic tasks (`CELERY_BEAT_SCHEDULE` in settings) into the database
schedule of django-celery-beat, which `celery -A portal beat` reads (`CELERY_BEAT_SCHEDULER`).
Idempotent: run after every `migrate`. Tasks of the portal no longer in the settings are
disabled (not deleted: an operator's own periodic tasks are left alone)."""

from datetime import timedelta

from celery.schedules import crontab
from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

PREFIX = "portal: "


def beat_schedule_sync(schedule: dict) -> list[str]:
    """Create or update one PeriodicTask per entry (named `portal: <name>`); returns the names."""
    names = []
    with transaction.atomic():
        for name, entry in schedule.items():
            every = entry["schedule"]
            fields = {"task": entry["task"], "enabled": True, "interval": None, "crontab": None}
            if isinstance(every, timedelta | int | float):
                seconds = int(every.total_seconds() if isinstance(every, timedelta) else every)
                fields["interval"], _ = IntervalSchedule.objects.get_or_create(
                    every=seconds, period=IntervalSchedule.SECONDS
                )
            elif isinstance(every, crontab):
                fields["crontab"], _ = CrontabSchedule.objects.get_or_create(
                    minute=every._orig_minute,
                    hour=every._orig_hour,
                    day_of_week=every._orig_day_of_week,
                    day_of_month=every._orig_day_of_month,
                    month_of_year=every._orig_month_of_year,
                    timezone="UTC",
                )
            else:
                raise TypeError(f"{name}: unsupported schedule {every!r}")
            PeriodicTask.objects.update_or_create(name=PREFIX + name, defaults=fields)
            names.append(PREFIX + name)
        PeriodicTask.objects.filter(name__startswith=PREFIX).exclude(name__in=names).update(
            enabled=False
        )
    return names


class Command(BaseCommand):
    help = "Write CELERY_BEAT_SCHEDULE into django-celery-beat's database schedule."

    def handle(self, *args, **options):
        from django.conf import settings

        names = beat_schedule_sync(settings.CELERY_BEAT_SCHEDULE)
        self.stdout.write(f"{len(names)} periodic tasks: {', '.join(names)}")
