"""The gateway's ASGI entry point: ``uvicorn gateway.asgi:application``."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arbitrage.settings")
django.setup()

from gateway.app import GatewayApp  # noqa: E402  (needs Django set up)

application = GatewayApp()
