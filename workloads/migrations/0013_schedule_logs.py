"""The beat schedules of the workload logs: collection every LOGS_COLLECT_SECONDS (at install), and the
retention sweep hourly; both editable in the admin."""

from django.conf import settings
from django.db import migrations

COLLECT = "Collect workload logs"
EXPIRE = "Expire workload logs"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=settings.LOGS_COLLECT_SECONDS, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=COLLECT, defaults={"task": "workloads.logs_collect", "interval": every, "enabled": True}
    )
    hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.get_or_create(
        name=EXPIRE, defaults={"task": "workloads.logs_expire", "interval": hourly, "enabled": True}
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[COLLECT, EXPIRE]).delete()


class Migration(migrations.Migration):
    dependencies = [("workloads", "0012_workload_logs")]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
