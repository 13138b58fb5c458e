# Customers and API keys now belong to the accounts app (accounts 0001 takes
# them over with their tables). Here the workloads app lets go of them: its
# foreign keys point at accounts.Customer, the models leave its state, and the
# admin's content types (and so the operators' permissions) follow them.

import django.db.models.deletion
from django.db import migrations, models


def content_types_move(apps, schema_editor, *, source: str, target: str) -> None:
    content_type = apps.get_model("contenttypes", "ContentType")
    for model in ("customer", "apikey"):
        if not content_type.objects.filter(app_label=target, model=model).exists():
            content_type.objects.filter(app_label=source, model=model).update(app_label=target)


def forwards(apps, schema_editor):
    content_types_move(apps, schema_editor, source="workloads", target="accounts")


def backwards(apps, schema_editor):
    content_types_move(apps, schema_editor, source="accounts", target="workloads")


class Migration(migrations.Migration):
    dependencies = [
        ("workloads", "0006_customer_notification_once"),
        ("accounts", "0001_initial"),
        ("billing", "0002_customer_in_accounts"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="workload",
                    name="customer",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="workloads", to="accounts.customer"
                    ),
                ),
                migrations.AlterField(
                    model_name="notification",
                    name="customer",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="notifications",
                        to="accounts.customer",
                    ),
                ),
                migrations.DeleteModel(name="ApiKey"),
                migrations.DeleteModel(name="Customer"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(forwards, backwards),
    ]
