"""The beat schedule of the readiness sweep (every READINESS_SWEEP_SECONDS at install), editable in the admin."""

from django.conf import settings
from django.db import migrations

TASK_NAME = "Readiness sweep"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=settings.READINESS_SWEEP_SECONDS, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME, defaults={"task": "workloads.readiness_sweep", "interval": every, "enabled": True}
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("workloads", "0014_instance_reclaimed_at")]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
