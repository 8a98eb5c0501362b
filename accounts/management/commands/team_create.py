from django.core.management.base import BaseCommand

from accounts.audit import Actor
from accounts.models import Team
from accounts.services import team_create
from portal.commands import command_errors, organization_arg


class Command(BaseCommand):
    help = "Create a team in an organization."

    def add_arguments(self, parser):
        parser.add_argument("org_slug")
        parser.add_argument("team_slug")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--funding", choices=Team.Funding.values, default=Team.Funding.ALLOCATION
        )

    def handle(self, *args, org_slug, team_slug, name, funding, **options):
        organization = organization_arg(org_slug)
        with command_errors():
            team = team_create(
                organization=organization,
                slug=team_slug,
                name=name,
                funding=funding,
                actor=Actor(system="manage.py team_create"),
            )
        self.stdout.write(f"Created team {team}.")
