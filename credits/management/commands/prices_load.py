"""`manage.py prices_load [PATH]`: load model prices into versioned `ModelPrice` rows."""

from django.core.management.base import BaseCommand

from credits.services.prices import prices_load
from portal.commands import command_errors


class Command(BaseCommand):
    help = (
        "Load model prices (idempotent; versions by effective date): without PATH, the data of "
        "the installed genai-prices package; with PATH, a price table in LiteLLM's "
        "model_prices_and_context_window.json format."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "path", nargs="?", help="A LiteLLM-format JSON price table (default: genai-prices)."
        )
        parser.add_argument(
            "--model",
            action="append",
            dest="models",
            help="Without PATH: load only this model id (repeatable), e.g. openai/gpt-4o.",
        )

    def handle(self, *args, path, models, **options):
        with command_errors():
            result = prices_load(path=path, models=models)
        when = f"effective {result.effective_from:%Y-%m-%d %H:%M} UTC" if path else "loaded"
        self.stdout.write(
            f"Prices from {result.source} {when}: {result.created} new, "
            f"{result.unchanged} unchanged."
        )
