from django.core.management.base import BaseCommand, CommandError

from accounts.audit import audit_verify
from accounts.models import Organization


class Command(BaseCommand):
    help = "Verify each organization's audit hash chain; name the first broken link."

    def add_arguments(self, parser):
        parser.add_argument("org_slug", nargs="?", help="Only this organization.")

    def handle(self, *args, org_slug=None, **options):
        orgs = Organization.objects.order_by("slug")
        if org_slug:
            orgs = orgs.filter(slug=org_slug)
        broken = 0
        for org in orgs:
            event = audit_verify(organization=org)
            if event is None:
                self.stdout.write(f"{org.slug}: intact")
            else:
                broken += 1
                self.stdout.write(
                    f"{org.slug}: broken at event #{event.sequence} "
                    f"(id {event.pk}, {event.action}, {event.created_at:%Y-%m-%d %H:%M:%S})"
                )
        if broken:
            raise CommandError(f"{broken} broken audit chain(s)")
