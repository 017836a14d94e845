from datetime import UTC, datetime

from django.db import migrations, models
from django.db.models import Count


def count_todays_orders(apps, schema_editor):
    """Start each agent's count at the orders it already had accepted today (UTC): every
    accepted order left a trade row, and a refused one none."""
    Agent = apps.get_model("agents", "Agent")
    Trade = apps.get_model("trades", "Trade")
    alias = schema_editor.connection.alias
    day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    counts = (
        Trade.objects.using(alias)
        .filter(created_at__gte=day_start)
        .values("agent_id")
        .annotate(orders=Count("pk"))
        .order_by()
    )
    for row in counts:
        Agent.objects.using(alias).filter(pk=row["agent_id"]).update(
            trades_today=row["orders"], trades_day=day_start.date()
        )


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0003_agent_limit_changes"),
        ("trades", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="agent",
            name="trades_today",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="agent",
            name="trades_day",
            field=models.DateField(blank=True, null=True),
        ),
        migrations.RunPython(count_todays_orders, migrations.RunPython.noop, elidable=True),
    ]
