"""Token counts of usage events now mean what providers report (OpenAI's and OpenRouter's `usage`):
`prompt_tokens` includes `cached_tokens` and `completion_tokens` includes `reasoning_tokens`.
Rows recorded before counted them apart, so their cached tokens are added into `prompt_tokens` and
their reasoning tokens into `completion_tokens`; `cost` is left as it was charged. Then the database
refuses a detail larger than its total."""

from django.db import migrations, models
from django.db.models import BigIntegerField, F, Q
from django.db.models.functions import Cast, Least

INT_MAX = 2_147_483_647  # a PositiveIntegerField is a 32-bit integer column


def _wide(field: str):
    return Cast(F(field), BigIntegerField())  # the sum may pass INT_MAX: clamp it, not fail


def include_details(apps, schema_editor):
    UsageEvent = apps.get_model("credits", "UsageEvent")
    UsageEvent.objects.filter(Q(cached_tokens__gt=0) | Q(reasoning_tokens__gt=0)).update(
        prompt_tokens=Least(_wide("prompt_tokens") + F("cached_tokens"), INT_MAX),
        completion_tokens=Least(_wide("completion_tokens") + F("reasoning_tokens"), INT_MAX),
    )


def exclude_details(apps, schema_editor):
    UsageEvent = apps.get_model("credits", "UsageEvent")
    UsageEvent.objects.filter(Q(cached_tokens__gt=0) | Q(reasoning_tokens__gt=0)).update(
        prompt_tokens=F("prompt_tokens") - F("cached_tokens"),
        completion_tokens=F("completion_tokens") - F("reasoning_tokens"),
    )


class Migration(migrations.Migration):
    dependencies = [("credits", "0003_hold_public_id")]

    operations = [
        migrations.RunPython(include_details, exclude_details),
        migrations.AddConstraint(
            model_name="usageevent",
            constraint=models.CheckConstraint(
                condition=Q(cached_tokens__lte=F("prompt_tokens")),
                name="usage_cached_within_prompt",
            ),
        ),
        migrations.AddConstraint(
            model_name="usageevent",
            constraint=models.CheckConstraint(
                condition=Q(reasoning_tokens__lte=F("completion_tokens")),
                name="usage_reasoning_within_completion",
            ),
        ),
    ]
