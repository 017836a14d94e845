from django.db import migrations


def create_operators_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.get_or_create(name="operators")


class Migration(migrations.Migration):
    """The `operators` group: its members see every agent and decide approvals."""

    dependencies = [
        ("agents", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_operators_group, migrations.RunPython.noop)]
