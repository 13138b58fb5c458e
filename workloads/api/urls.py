from django.urls import path

from workloads.api import agent_views, views

urlpatterns = [
    path("workloads", views.WorkloadListCreateView.as_view(), name="workload-list"),
    path("workloads/batch", views.WorkloadBatchCreateView.as_view(), name="workload-batch"),
    path("workloads/<uuid:workload_id>", views.WorkloadDetailView.as_view(), name="workload-detail"),
    path("agent/interruption", agent_views.AgentInterruptionView.as_view(), name="agent-interruption"),
    path("agent/progress", agent_views.AgentProgressView.as_view(), name="agent-progress"),
    path("agent/logs", agent_views.AgentLogsView.as_view(), name="agent-logs"),
    path("workloads/<uuid:workload_id>/logs", views.WorkloadLogsView.as_view(), name="workload-logs"),
    path("workloads/<uuid:workload_id>/rebalance", views.WorkloadRebalanceView.as_view(), name="workload-rebalance"),
    path("workloads/<uuid:workload_id>/terminate", views.WorkloadTerminateView.as_view(), name="workload-terminate"),
]
