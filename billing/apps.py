from django.apps import AppConfig


class BillingConfig(AppConfig):
    """Usage records, cost and savings (DESIGN.md §11); filled by its issue."""

    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"
