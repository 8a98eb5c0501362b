from django.core.management.base import BaseCommand

from accounts.audit import Actor
from accounts.services import organization_create
from portal.commands import command_errors


class Command(BaseCommand):
    help = "Create an organization with its first owner (created when the e-mail is new)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner", required=True, help="The owner's e-mail address.")
        parser.add_argument("--password", help="The owner's password, if the user is new.")

    def handle(self, *args, slug, name, owner, password, **options):
        with command_errors():
            org = organization_create(
                slug=slug,
                name=name,
                owner_email=owner,
                owner_password=password,
                actor=Actor(system="manage.py org_create"),
            )
        self.stdout.write(f"Created organization {org.slug} ({org.name}), owner {owner}.")
