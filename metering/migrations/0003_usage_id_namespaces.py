"""Usage ids in two namespaces: ``server:…`` for the server's events, ``client:<agent>:<id>``
for a client's (the client's own id kept in ``client_transaction_id``, unique per agent).

Rows written before keep their ids (those delivered are known to the metering service by them).
Only ids already in one of the new namespaces can have come from a client claiming them in
advance (the server never wrote such ids): they move to ``legacy:…``, so that no id the server
writes from now on can meet one.
"""

from django.db import migrations, models
from django.db.models import Q, Value
from django.db.models.functions import Concat


def move_claimed_ids_aside(apps, schema_editor):
    UsageEvent = apps.get_model("metering", "UsageEvent")
    UsageEvent.objects.filter(
        Q(transaction_id__startswith="server:") | Q(transaction_id__startswith="client:")
    ).update(transaction_id=Concat(Value("legacy:"), "transaction_id"))


class Migration(migrations.Migration):

    dependencies = [
        ('agents', '0002_operators_group'),
        ('metering', '0002_usage_pending_index'),
    ]

    operations = [
        migrations.AddField(
            model_name='usageevent',
            name='client_transaction_id',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name='usageevent',
            name='transaction_id',
            field=models.CharField(max_length=128, unique=True),
        ),
        migrations.AddConstraint(
            model_name='usageevent',
            constraint=models.UniqueConstraint(condition=models.Q(('client_transaction_id__isnull', False)), fields=('agent', 'client_transaction_id'), name='usage_client_id_unique_per_agent'),
        ),
        migrations.RunPython(move_claimed_ids_aside, migrations.RunPython.noop),
    ]
