from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications and webhooks"

    def ready(self) -> None:
        from portal.metrics import scrape_collector_register

        from . import checks  # noqa: F401  (registers the deploy check of FIELD_ENCRYPTION_KEY)
        from .metrics import DeliveriesCollector

        scrape_collector_register(DeliveriesCollector())  # outbox deliveries by outcome
