from django.apps import AppConfig


class WorkloadsConfig(AppConfig):
    name = "workloads"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the workflows with the engine, in every process (web and worker).
        from workloads.workflows import migrate, provision, terminate  # noqa: F401
