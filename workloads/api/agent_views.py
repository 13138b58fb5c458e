"""Endpoints a workload's own instance calls, authenticated by its agent token.

Both are reports, so a terminated workload's (read-only) token is refused them with 403.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import AgentTokenAuthentication, WorkloadAgent
from accounts.permissions import AgentTokenWrites
from arbitrage.api.fields import StrictBooleanField, StrictCharField, StrictFloatField, StrictSerializer
from workloads import recovery, services
from workloads.api.serializers import MAX_DURATION_SECONDS

ERROR = OpenApiResponse(description='Error: {"error": {status, code, message, ...}}')
AGENT_ERRORS = {400: ERROR, 401: ERROR, 403: ERROR}


class InterruptionReportSerializer(StrictSerializer):
    checkpoint = StrictCharField(max_length=200, required=False, allow_null=True, default=None)
    reason = StrictCharField(max_length=500, required=False, allow_blank=True, default="")


def _agent_workload_id(request):
    """The workload whose agent token authenticated the request (the authentication found it); 404 for anyone else."""
    agent = request.user
    if not isinstance(agent, WorkloadAgent):
        raise Http404
    return agent.workload_id


class AgentView(APIView):
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAuthenticated, AgentTokenWrites]


class AgentInterruptionView(AgentView):
    @extend_schema(
        operation_id="agent_interruption",
        request=InterruptionReportSerializer,
        responses={
            202: inline_serializer(
                "InterruptionReported", {"workload_id": serializers.UUIDField(), "status": serializers.CharField()}
            ),
            404: OpenApiResponse(description="The token's workload no longer exists."),
            409: OpenApiResponse(description="The workload's state does not allow it (current_state)."),
            **AGENT_ERRORS,
        },
        description="The agent saw its instance's interruption notice and saved its final checkpoint "
        "(named in `checkpoint`, if any). Moves a RUNNING workload to INTERRUPTED; repeats are harmless. "
        "Refused (403 `agent_token_read_only`) once the workload is terminated.",
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


class AgentProgressView(AgentView):
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
            **AGENT_ERRORS,
        },
        description="The workload's own count of the compute it has done (`completed_seconds`), which the "
        "deadline logic uses instead of its run time. With `finished: true` a running workload is terminated. "
        "Refused (403 `agent_token_read_only`) once the workload is terminated.",
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
