"""The commands later issues and their tests rely on (keep these names)."""

import pytest
from django.core.management import CommandError, call_command

from accounts.access import key_scopes
from accounts.models import ApiKey, Organization, Team


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_org_team_and_key_commands(db):
    run(
        "org_create",
        "initech",
        "--name",
        "Initech",
        "--owner",
        "boss@initech.test",
        "--password",
        "correct-horse-battery",
    )
    run("team_create", "initech", "tps", "--name", "TPS reports")
    output = run(
        "apikey_create",
        "initech",
        "--kind",
        "usage",
        "--name",
        "bot",
        "--team",
        "tps",
        "--member",
        "boss@initech.test",
    )
    secret = output.strip().splitlines()[-1]
    assert secret.startswith("sk-cp-v1-") and " " not in secret
    key = ApiKey.objects.get(name="bot")
    assert key.team == Team.objects.get(slug="tps") and key.user.email == "boss@initech.test"
    assert key_scopes(key) == {"credits:read", "usage:read", "usage:write"}
    assert Organization.objects.get(slug="initech").name == "Initech"


def test_command_errors_are_clear(db):
    with pytest.raises(CommandError, match="No organization 'nope'"):
        run("team_create", "nope", "t", "--name", "T")
    run("org_create", "initech", "--name", "Initech", "--owner", "boss@initech.test")
    with pytest.raises(CommandError, match="taken"):
        run("org_create", "initech", "--name", "Again", "--owner", "boss@initech.test")
    with pytest.raises(CommandError, match="slug"):
        run("team_create", "initech", "Bad Slug", "--name", "T")
    with pytest.raises(CommandError, match="No team"):
        run("apikey_create", "initech", "--kind", "usage", "--team", "missing")
