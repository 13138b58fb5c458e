from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The `make demo` story: a customer's day played over the REST API (`manage.py demo`)."""

    name = "demo"
