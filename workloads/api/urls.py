from django.urls import path

from workloads.api import views

urlpatterns = [
    path("workloads", views.WorkloadListCreateView.as_view(), name="workload-list"),
    path("workloads/<uuid:workload_id>", views.WorkloadDetailView.as_view(), name="workload-detail"),
    path("workloads/<uuid:workload_id>/terminate", views.WorkloadTerminateView.as_view(), name="workload-terminate"),
]
