"""Google's published list prices (Gemini Developer API, paid tier, standard processing, text
input, prompts up to 200k tokens), per million tokens, in USD. Source and date: docs/budgets.md.
Staff maintain the table in the admin from here on; a later price is a new row."""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import migrations

SOURCE = "https://ai.google.dev/gemini-api/docs/pricing (list price, seeded)"
# model, input, output (thinking tokens are billed as output), in force from
PRICES = [
    ("gemini-2.5-flash", "0.30", "2.50", datetime(2025, 6, 17, tzinfo=UTC)),
    ("gemini-2.5-pro", "1.25", "10.00", datetime(2025, 6, 17, tzinfo=UTC)),
    ("gemini-2.5-flash-lite", "0.10", "0.40", datetime(2025, 7, 22, tzinfo=UTC)),
    # The offline model of `make run` and the tests costs nothing.
    ("local-echo-1", "0", "0", datetime(2025, 1, 1, tzinfo=UTC)),
]


def seed(apps, schema_editor):
    ModelPrice = apps.get_model("billing", "ModelPrice")
    for model, input_price, output_price, since in PRICES:
        ModelPrice.objects.get_or_create(
            model=model,
            effective_from=since,
            defaults={
                "input_per_million": Decimal(input_price),
                "output_per_million": Decimal(output_price),
                "currency": "USD",
                "source": "offline model, free" if model == "local-echo-1" else SOURCE,
            },
        )


def unseed(apps, schema_editor):
    ModelPrice = apps.get_model("billing", "ModelPrice")
    for model, _input, _output, since in PRICES:
        ModelPrice.objects.filter(model=model, effective_from=since).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_prices_cost_and_alerts")]

    operations = [migrations.RunPython(seed, unseed)]
