from django.core.management.base import BaseCommand, CommandError

from credits.metrics import ledger_verify_result_store
from credits.verify import ledger_verify
from portal.commands import organization_arg


class Command(BaseCommand):
    help = "Recompute every balance, held amount and lot total from the rows; exit 1 on mismatch."

    def add_arguments(self, parser):
        parser.add_argument("org_slug", nargs="?")

    def handle(self, *args, org_slug=None, **options):
        org_id = organization_arg(org_slug).pk if org_slug else None
        mismatches = ledger_verify(org_id)
        if org_id is None:
            ledger_verify_result_store(len(mismatches))  # for /metrics
        for m in mismatches:
            self.stdout.write(str(m))
        if mismatches:
            raise CommandError(f"{len(mismatches)} mismatch(es)")
        self.stdout.write("Ledger verified: every balance equals its entries.")
