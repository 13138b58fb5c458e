"""Operator console for billing: usage records and a customer's monthly summary."""

from __future__ import annotations

from datetime import date

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode

from accounts.models import Customer
from billing.models import UsageRecord
from billing.selectors import customer_monthly_summary, month_end, month_parse, month_start

SUMMARY_URL_NAME = "billing_usagerecord_summary"
FILTER_MONTHS = 24


def monthly_summary_url(*, customer_id=None, month: date | None = None) -> str:
    """The admin's "Monthly summary" page, for one customer and month when given."""
    query = {}
    if customer_id is not None:
        query["customer"] = str(customer_id)
    if month is not None:
        query["month"] = month.strftime("%Y-%m")
    url = reverse(f"admin:{SUMMARY_URL_NAME}")
    return f"{url}?{urlencode(query)}" if query else url


class MonthListFilter(admin.SimpleListFilter):
    """Records that overlap a calendar month (UTC), as the monthly summary counts them."""

    title = "month"
    parameter_name = "month"

    def lookups(self, request, model_admin):
        months = UsageRecord.objects.dates("ended_at", "month", order="DESC")[:FILTER_MONTHS]
        return [(month.strftime("%Y-%m"), month.strftime("%Y-%m")) for month in months]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            month = month_parse(self.value())
        except ValueError:
            return queryset.none()
        return queryset.filter(started_at__lt=month_end(month), ended_at__gt=month_start(month))


class MonthlySummaryForm(forms.Form):
    customer = forms.ModelChoiceField(queryset=Customer.objects.order_by("name"))
    month = forms.CharField(max_length=7, help_text="YYYY-MM (UTC)")

    def clean_month(self) -> date:
        try:
            return month_parse(self.cleaned_data["month"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "workload",
        "customer",
        "provider",
        "region",
        "instance_type",
        "market",
        "started_at",
        "ended_at",
        "duration_hours",
        "spot_price_per_hour",
        "total_cost",
        "on_demand_cost",
    ]
    list_filter = ["provider", "market", "customer", MonthListFilter, "region"]
    list_select_related = ["workload", "customer"]
    search_fields = ["=workload__id", "workload__name", "instance__instance_id"]
    readonly_fields = [field.name for field in UsageRecord._meta.fields]
    date_hierarchy = "ended_at"
    change_list_template = "admin/billing/usagerecord/change_list.html"

    def has_add_permission(self, request) -> bool:
        return False

    def get_urls(self):
        summary = path("summary/", self.admin_site.admin_view(self.summary_view), name=SUMMARY_URL_NAME)
        return [summary, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "monthly_summary_url": monthly_summary_url()}
        return super().changelist_view(request, extra_context=extra_context)

    def summary_view(self, request: HttpRequest):
        """The monthly summary (the API's figures) for a customer and month chosen on the page."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        data = {"month": now.strftime("%Y-%m"), **request.GET.dict()}
        form = MonthlySummaryForm(data if "customer" in request.GET else None, initial={"month": data["month"]})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Monthly summary",
            "form": form,
            "summary": None,
        }
        if form.is_bound and form.is_valid():
            customer, month = form.cleaned_data["customer"], form.cleaned_data["month"]
            summary = customer_monthly_summary(customer_id=customer.pk, month=month, now=now)
            previous_month = date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)
            context.update(
                title=f"Monthly summary: {customer.name}, {summary.label}",
                customer=customer,
                summary=summary,
                previous_url=monthly_summary_url(customer_id=customer.pk, month=previous_month),
                next_url=monthly_summary_url(customer_id=customer.pk, month=month_end(month).date()),
                records_url=reverse("admin:billing_usagerecord_changelist")
                + "?"
                + urlencode({"customer__id__exact": str(customer.pk), "month": summary.label}),
                customer_url=reverse("admin:accounts_customer_change", args=[customer.pk]),
            )
        return TemplateResponse(request, "admin/billing/monthly_summary.html", context)
