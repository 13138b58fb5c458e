from django.urls import path

from billing.api import views

urlpatterns = [
    path("summary", views.MonthlySummaryView.as_view(), name="billing-summary"),
]
