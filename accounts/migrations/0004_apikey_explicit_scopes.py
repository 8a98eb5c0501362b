"""A key's `scopes` become exactly its scopes: an empty list used to mean "all its kind
allows"; those keys get that list written out, so they keep what they could do."""

from django.db import migrations

KIND_SCOPES = {
    "management": [
        "audit:read",
        "billing:read",
        "billing:write",
        "credits:read",
        "credits:write",
        "keys:read",
        "keys:write",
        "members:read",
        "members:write",
        "org:read",
        "org:write",
        "usage:read",
        "usage:write",
    ],
    "usage": ["credits:read", "usage:read", "usage:write"],
}


def explicit(apps, schema_editor):
    ApiKey = apps.get_model("accounts", "ApiKey")
    for kind, scopes in KIND_SCOPES.items():
        ApiKey.objects.filter(kind=kind, scopes=[]).update(scopes=scopes)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0003_organization_time_zone")]

    operations = [migrations.RunPython(explicit, migrations.RunPython.noop)]
