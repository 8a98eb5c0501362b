from pathlib import Path

from django.core.management.base import BaseCommand

from credits.services.prices import DEFAULT_PRICE_FILE, prices_load
from portal.commands import command_errors


class Command(BaseCommand):
    help = "Load model prices from the LiteLLM price table (idempotent; versions by date)."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default=str(DEFAULT_PRICE_FILE))

    def handle(self, *args, path, **options):
        with command_errors():
            result = prices_load(path=Path(path))
        self.stdout.write(
            f"Prices effective {result.effective_from:%Y-%m-%d %H:%M} UTC: "
            f"{result.created} new, {result.unchanged} unchanged."
        )
