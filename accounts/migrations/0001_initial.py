# Customers and API keys move from the workloads app to accounts. Their tables
# ("customers", "api_keys") stay as they are: this changes Django's state only,
# so existing rows are kept. On an empty database the tables are made by
# workloads 0001, which runs first.

import uuid

import django.db.models.deletion
from django.db import migrations, models

import accounts.models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("workloads", "0006_customer_notification_once"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Customer",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("name", models.CharField(max_length=200)),
                        (
                            "max_concurrent_workloads",
                            models.PositiveIntegerField(default=accounts.models.default_max_concurrent_workloads),
                        ),
                        ("webhook_url", models.URLField(blank=True, max_length=500)),
                        (
                            "webhook_secret",
                            models.CharField(
                                blank=True,
                                help_text="Key of the HMAC-SHA256 signature on webhook deliveries.",
                                max_length=128,
                            ),
                        ),
                        (
                            "storage_quota_bytes",
                            models.BigIntegerField(default=10737418240, help_text="Default storage quota per workload."),
                        ),
                        (
                            "storage_retention_days",
                            models.PositiveIntegerField(
                                default=30, help_text="Default days storage is kept after a workload ends."
                            ),
                        ),
                        (
                            "monthly_budget",
                            models.DecimalField(
                                blank=True,
                                decimal_places=2,
                                help_text="USD per calendar month (UTC). New workloads are refused once this month's "
                                "spend reaches it; empty means no budget.",
                                max_digits=12,
                                null=True,
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={"db_table": "customers", "ordering": ["name"]},
                ),
                migrations.CreateModel(
                    name="ApiKey",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("name", models.CharField(default="default", max_length=100)),
                        (
                            "prefix",
                            models.CharField(
                                db_index=True, help_text="The key's first characters, to recognise it.", max_length=16
                            ),
                        ),
                        ("key_hash", models.CharField(editable=False, max_length=64, unique=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True)),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "customer",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="api_keys",
                                to="accounts.customer",
                            ),
                        ),
                    ],
                    options={"db_table": "api_keys", "ordering": ["-created_at"]},
                ),
            ],
            database_operations=[],
        ),
    ]
