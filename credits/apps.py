from django.apps import AppConfig


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Credits, ledger and usage"

    def ready(self) -> None:
        from portal.metrics import scrape_collector_register

        from .metrics import CreditsCollector

        scrape_collector_register(CreditsCollector())  # holds open, last ledger verification
