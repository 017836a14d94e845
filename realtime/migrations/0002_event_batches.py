# The event buffer keeps one row per transaction (AgentEventBatch) instead of one per event.
# Buffered events are carried over, each as a batch of one, so a client resuming across the
# upgrade replays them as before.

import django.db.models.deletion
from django.db import migrations, models

CHUNK = 1000


def events_to_batches(apps, schema_editor):
    AgentEvent = apps.get_model("realtime", "AgentEvent")
    AgentEventBatch = apps.get_model("realtime", "AgentEventBatch")
    batches = []
    for event in AgentEvent.objects.order_by("pk").iterator(chunk_size=CHUNK):
        batches.append(
            AgentEventBatch(
                agent_id=event.agent_id,
                first_seq=event.seq,
                last_seq=event.seq,
                events=[
                    {
                        "seq": event.seq,
                        "event": event.event,
                        "channel": event.channel,
                        "data": event.data,
                    }
                ],
                created_at=event.created_at,
            )
        )
        if len(batches) == CHUNK:
            AgentEventBatch.objects.bulk_create(batches)
            batches = []
    AgentEventBatch.objects.bulk_create(batches)


def batches_to_events(apps, schema_editor):
    AgentEvent = apps.get_model("realtime", "AgentEvent")
    AgentEventBatch = apps.get_model("realtime", "AgentEventBatch")
    rows = []
    for batch in AgentEventBatch.objects.order_by("pk").iterator(chunk_size=CHUNK):
        for event in batch.events:
            rows.append(
                AgentEvent(
                    agent_id=batch.agent_id,
                    seq=event["seq"],
                    event=event["event"],
                    channel=event["channel"],
                    data=event["data"],
                    created_at=batch.created_at,
                )
            )
        if len(rows) >= CHUNK:
            AgentEvent.objects.bulk_create(rows)
            rows = []
    AgentEvent.objects.bulk_create(rows)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
        ("realtime", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="AgentEventBatch",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("first_seq", models.BigIntegerField()),
                ("last_seq", models.BigIntegerField()),
                ("events", models.JSONField()),
                ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                (
                    "agent",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="event_batches",
                        to="agents.agent",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "agent event batches",
                "ordering": ["agent", "last_seq"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("agent", "last_seq"), name="agent_event_batch_unique_last_seq"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("first_seq__lte", models.F("last_seq"))),
                        name="agent_event_batch_seq_range",
                    ),
                ],
            },
        ),
        migrations.RunPython(events_to_batches, batches_to_events),
        migrations.DeleteModel(name="AgentEvent"),
    ]
