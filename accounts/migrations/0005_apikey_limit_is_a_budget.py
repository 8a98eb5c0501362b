"""An API key's `limit` / `limit_reset` now live in a `credits.Budget` on the key (UTC windows):
`credits/0006` copied them; the columns go."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_apikey_explicit_scopes"),
        ("credits", "0006_key_limits_to_budgets"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="apikey",
            name="apikey_limit_not_negative",
        ),
        migrations.RemoveField(
            model_name="apikey",
            name="limit",
        ),
        migrations.RemoveField(
            model_name="apikey",
            name="limit_reset",
        ),
    ]
