from django.core.management.base import BaseCommand, CommandError

from accounts.audit import Actor
from accounts.models import User
from accounts.roles import KeyKind
from accounts.selectors import team_get
from accounts.services import apikey_create
from portal.commands import command_errors, organization_arg


class Command(BaseCommand):
    help = "Create an API key. The secret is printed alone on the last line (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("org_slug")
        parser.add_argument("--kind", choices=KeyKind.values, required=True)
        parser.add_argument("--name", default="")
        parser.add_argument("--team", help="Bind the key to this team (slug).")
        parser.add_argument("--member", help="The member (e-mail) the key acts for.")
        parser.add_argument("--limit", help="Credit limit of the key (credits).")
        parser.add_argument("--limit-reset", choices=["daily", "weekly", "monthly"])

    def handle(self, *args, org_slug, kind, name, team, member, limit, limit_reset, **options):
        organization = organization_arg(org_slug)
        with command_errors():
            team_obj = team_get(organization=organization, slug=team) if team else None
            user = None
            if member:
                user = User.objects.filter(email=member.lower()).first()
                if user is None:
                    raise CommandError(f"No user '{member}'.")
            key, secret = apikey_create(
                organization=organization,
                name=name or f"{kind} key",
                kind=kind,
                team=team_obj,
                user=user,
                limit=limit,
                limit_reset=limit_reset,
                actor=Actor(system="manage.py apikey_create"),
            )
        self.stdout.write(f"Created {kind} key '{key.name}' ({key.label}) for {organization.slug}.")
        self.stdout.write("The secret is shown once:")
        self.stdout.write(secret)
