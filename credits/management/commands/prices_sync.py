"""`manage.py prices_sync`: refresh model prices from the data genai-prices publishes."""

from django.core.management.base import BaseCommand

from credits.services.prices import SYNC_TIMEOUT, prices_sync


class Command(BaseCommand):
    help = (
        "Fetch the latest prices genai-prices publishes and load the changes as new versions. "
        "Without internet, keeps the installed prices and says so (exit status 0)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", help="Where to fetch from (default: genai-prices' own URL).")
        parser.add_argument(
            "--timeout", type=float, default=SYNC_TIMEOUT, help="Seconds to wait for the data."
        )

    def handle(self, *args, url, timeout, **options):
        result = prices_sync(url=url, timeout=timeout)
        self.stdout.write(result.message)
