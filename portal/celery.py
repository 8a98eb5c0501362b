"""The Celery app. Broker and result store from the environment (`CELERY_BROKER_URL`); with none
set, tasks run eagerly in the calling process (the demo). The beat schedule is in settings."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
