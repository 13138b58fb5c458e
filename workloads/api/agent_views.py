"""Endpoints a workload's own instance calls, authenticated by its agent token."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import AgentTokenAuthentication, WorkloadAgent
from arbitrage.api.fields import StrictBooleanField, StrictCharField, StrictFloatField, StrictSerializer
from workloads import recovery, services
from workloads.api.serializers import MAX_DURATION_SECONDS
from workloads.models import Workload


class InterruptionReportSerializer(StrictSerializer):
    checkpoint = StrictCharField(max_length=200, required=False, allow_null=True, default=None)
    reason = StrictCharField(max_length=500, required=False, allow_blank=True, default="")


def _agent_workload_id(request):
    """The workload whose agent token authenticated the request; 404 for anyone else or a deleted workload."""
    agent = request.user
    if not isinstance(agent, WorkloadAgent) or not Workload.objects.filter(id=agent.workload_id).exists():
        raise Http404
    return agent.workload_id


class AgentInterruptionView(APIView):
    authentication_classes = [AgentTokenAuthentication]

    @extend_schema(
        operation_id="agent_interruption",
        request=InterruptionReportSerializer,
        responses={
            202: inline_serializer(
                "InterruptionReported", {"workload_id": serializers.UUIDField(), "status": serializers.CharField()}
            ),
            404: OpenApiResponse(description="The token's workload no longer exists."),
            409: OpenApiResponse(description="The workload's state does not allow it (current_state)."),
        },
        description="The agent saw its instance's interruption notice and saved its final checkpoint "
        "(named in `checkpoint`, if any). Moves a RUNNING workload to INTERRUPTED; repeats are harmless.",
    )
    def post(self, request):
        workload_id = _agent_workload_id(request)
        report = InterruptionReportSerializer(data=request.data)
        report.is_valid(raise_exception=True)
        workload = recovery.agent_interruption_report(workload_id=workload_id, **report.validated_data)
        return Response({"workload_id": str(workload.id), "status": workload.status}, status=status.HTTP_202_ACCEPTED)


class ProgressReportSerializer(StrictSerializer):
    completed_seconds = StrictFloatField(
        min_value=0, max_value=MAX_DURATION_SECONDS, help_text="Seconds of compute the job has done so far."
    )
    finished = StrictBooleanField(required=False, default=False, help_text="The job is done: terminate it.")


class AgentProgressView(APIView):
    authentication_classes = [AgentTokenAuthentication]

    @extend_schema(
        operation_id="agent_progress",
        request=ProgressReportSerializer,
        responses={
            202: inline_serializer(
                "ProgressReported",
                {
                    "workload_id": serializers.UUIDField(),
                    "status": serializers.CharField(),
                    "progress_seconds": serializers.FloatField(),
                },
            ),
            404: OpenApiResponse(description="The token's workload no longer exists."),
            409: OpenApiResponse(description="The workload's state does not allow it (current_state)."),
        },
        description="The workload's own count of the compute it has done (`completed_seconds`), which the "
        "deadline logic uses instead of its run time. With `finished: true` a running workload is terminated.",
    )
    def post(self, request):
        workload_id = _agent_workload_id(request)
        report = ProgressReportSerializer(data=request.data)
        report.is_valid(raise_exception=True)
        workload = services.workload_progress_report(workload_id=workload_id, **report.validated_data)
        return Response(
            {"workload_id": str(workload.id), "status": workload.status, "progress_seconds": workload.progress_seconds},
            status=status.HTTP_202_ACCEPTED,
        )
