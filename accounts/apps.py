from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Customers, API keys, agent and access tokens, and the API's authentication (docs/architecture.md §12)."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
