from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from accounts.audit import Actor
from credits.services import credits_grant
from portal.commands import command_errors, organization_arg


class Command(BaseCommand):
    help = "Grant credits into an organization's pool (a new credit lot)."

    def add_arguments(self, parser):
        parser.add_argument("org_slug")
        parser.add_argument("amount", help="Credits (USD), a decimal.")
        parser.add_argument("--expires-at", help="ISO 8601 with a time zone.")
        parser.add_argument("--priority", type=int, default=50, help="0-100, lower burns first.")
        parser.add_argument("--idempotency-key")
        parser.add_argument("--source", choices=["grant", "purchase", "promotion"], default="grant")
        parser.add_argument("--memo", default="")

    def handle(
        self,
        *args,
        org_slug,
        amount,
        expires_at,
        priority,
        idempotency_key,
        source,
        memo,
        **options,
    ):
        organization = organization_arg(org_slug)
        when = None
        if expires_at:
            when = parse_datetime(expires_at)
            if when is None or when.tzinfo is None:
                raise CommandError(
                    "--expires-at: an ISO 8601 time with a zone, e.g. 2027-01-01T00:00:00Z"
                )
        with command_errors():
            txn = credits_grant(
                organization=organization,
                amount=amount,
                source=source,
                priority=priority,
                expires_at=when,
                memo=memo,
                idempotency_key=idempotency_key,
                actor=Actor(system="manage.py credits_grant"),
            )
        pool = txn.entries.filter(lot__isnull=False).select_related("account").first()
        self.stdout.write(
            f"Granted {amount} credits to {organization.slug} (transaction {txn.pk}); "
            f"pool balance {pool.account.balance if pool else '?'}."
        )
