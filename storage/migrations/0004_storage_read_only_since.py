# Storage knows itself when it became read-only (its workload ended) instead of
# asking the workloads table; storage of workloads already terminated is marked.

from django.db import migrations, models


def mark_terminated(apps, schema_editor):
    config = apps.get_model("storage", "WorkloadStorageConfig")
    ended = config.objects.filter(workload__status="TERMINATED", read_only_since__isnull=True)
    for row in ended.select_related("workload"):
        row.read_only_since = row.workload.terminated_at or row.workload.updated_at
        row.save(update_fields=["read_only_since"])


class Migration(migrations.Migration):
    dependencies = [
        ("storage", "0003_schedule_storage_expiry"),
    ]

    operations = [
        migrations.AddField(
            model_name="workloadstorageconfig",
            name="read_only_since",
            field=models.DateTimeField(
                blank=True, help_text="When the workload ended: no more uploads from then on.", null=True
            ),
        ),
        migrations.RunPython(mark_terminated, migrations.RunPython.noop),
    ]
