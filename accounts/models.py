"""Customers and their API keys.

The tables keep the names they had when these models lived in the workloads app
(``customers``, ``api_keys``): the move was a change of Django state only.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


def default_max_concurrent_workloads() -> int:
    return settings.DEFAULT_MAX_CONCURRENT_WORKLOADS


GIB = 1024**3


class Customer(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    max_concurrent_workloads = models.PositiveIntegerField(default=default_max_concurrent_workloads)
    webhook_url = models.URLField(max_length=500, blank=True)
    webhook_secret = models.CharField(
        max_length=128, blank=True, help_text="Key of the HMAC-SHA256 signature on webhook deliveries."
    )
    storage_quota_bytes = models.BigIntegerField(default=10 * GIB, help_text="Default storage quota per workload.")
    storage_retention_days = models.PositiveIntegerField(
        default=30, help_text="Default days storage is kept after a workload ends."
    )
    monthly_budget = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="USD per calendar month (UTC). New workloads are refused once this month's spend reaches it; "
        "empty means no budget.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "customers"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A customer's API key. Only its SHA-256 hash and a short prefix are stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, db_index=True, help_text="The key's first characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "api_keys"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.customer})"
