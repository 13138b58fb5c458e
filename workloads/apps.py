from django.apps import AppConfig


class WorkloadsConfig(AppConfig):
    name = "workloads"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the workflows with the engine, in every process (web and worker).
        from accounts.tokens import agent_token_standing_source_register
        from workloads.selectors import agent_token_standing_get
        from workloads.workflows import migrate, provision, terminate  # noqa: F401

        # Accounts authenticates agent tokens but sits below workloads: it asks here what one may do.
        agent_token_standing_source_register(source=agent_token_standing_get)
