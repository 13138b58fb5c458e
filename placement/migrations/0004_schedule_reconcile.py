"""The beat schedules of cloud reconciliation (every 5 minutes) and of the spot interruption
warning queues (every 20 seconds), editable in the admin."""

from django.db import migrations

SCHEDULES = {
    "Cloud reconciliation": ("workloads.cloud_reconcile", 300),
    "Cloud interruption warnings": ("workloads.cloud_interruption_warnings", 20),
}


def create_schedules(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, (task, seconds) in SCHEDULES.items():
        every, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.get_or_create(name=name, defaults={"task": task, "interval": every, "enabled": True})


def remove_schedules(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=SCHEDULES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("placement", "0003_reconcile_findings"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
