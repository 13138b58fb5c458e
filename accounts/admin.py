"""Admin for customers and their API keys."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from accounts import services
from accounts.models import ApiKey, Customer


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    # Revoking goes through the "Revoke selected keys" action (accounts.services.api_key_revoke), which
    # tells the gateway; a key is revoked, never deleted, so its record stays.
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # keys are made with the "Create API key" action, which shows the key once


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "max_concurrent_workloads", "monthly_budget", "webhook_url", "created_at"]
    search_fields = ["id", "name"]
    readonly_fields = ["id", "monthly_summary", "created_at", "updated_at"]
    inlines = [ApiKeyInline]
    actions = ["create_api_key"]

    @admin.display(description="Billing")
    def monthly_summary(self, customer: Customer) -> str:
        # Billing sits above accounts, so its page is reached by URL name, not by import.
        if customer is None or customer.pk is None:
            return "-"
        url = reverse("admin:billing_usagerecord_summary")
        return format_html('<a href="{}?{}">Monthly summary</a>', url, urlencode({"customer": str(customer.pk)}))

    @admin.action(description="Create an API key (shown once)")
    def create_api_key(self, request, queryset) -> None:
        for customer in queryset:
            _, raw_key = services.api_key_create(customer=customer, name="admin")
            self.message_user(
                request,
                f"New API key for {customer.name}: {raw_key} (copy it now; it is not stored).",
                messages.WARNING,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "customer", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["customer"]
    search_fields = ["prefix", "name", "customer__name"]
    readonly_fields = ["id", "customer", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the revocation reaches the gateway, and the record stays

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:
        revoked = sum(services.api_key_revoke(api_key=api_key) for api_key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).")
