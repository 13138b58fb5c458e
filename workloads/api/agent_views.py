"""Endpoints a workload's own instance calls, authenticated by its agent token.

All are reports (interruption, progress, output), so a terminated workload's (read-only) token is
refused them with 403.
"""

from __future__ import annotations

import base64
import binascii

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import AgentTokenAuthentication, WorkloadAgent
from accounts.permissions import AgentTokenWrites
from arbitrage.api.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
)
from workloads import recovery, services
from workloads.api.serializers import MAX_DURATION_SECONDS
from workloads.errors import LogBatchTooLarge

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


#: Base64 characters of the largest batch the service takes, and a little more: a longer one is
#: refused (413) without being decoded.
MAX_DATA_B64 = (services.PUSH_MAX_BYTES + 2) // 3 * 4
MAX_OFFSET = 2**53  # exact in every JSON reader


class LogBatchSerializer(StrictSerializer):
    offset = StrictIntegerField(
        min_value=0, max_value=MAX_OFFSET, help_text="Byte offset of the batch's first byte in the command's output."
    )
    data_b64 = StrictCharField(
        allow_blank=True,
        trim_whitespace=False,
        help_text=f"The batch's raw bytes, base64 (standard alphabet, padded); at most {services.PUSH_MAX_BYTES} "
        "bytes decoded.",
    )
    final = StrictBooleanField(
        required=False, default=False, help_text="The command has exited and this is the end of its output."
    )
    resume = StrictBooleanField(
        required=False,
        default=False,
        help_text="The bytes between the log's end and `offset` are lost for good: take this batch anyway.",
    )

    def validate_data_b64(self, value: str) -> bytes:
        if len(value) > MAX_DATA_B64:
            raise LogBatchTooLarge(
                f"A batch carries at most {services.PUSH_MAX_BYTES} bytes of output.", max_bytes=services.PUSH_MAX_BYTES
            )
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise serializers.ValidationError("Must be base64 (standard alphabet, padded).") from None


class AgentLogsView(AgentView):
    @extend_schema(
        operation_id="agent_logs",
        request=LogBatchSerializer,
        responses={
            202: inline_serializer(
                "LogBatchTaken",
                {
                    "workload_id": serializers.UUIDField(),
                    "instance_id": serializers.CharField(),
                    "offset": serializers.IntegerField(
                        help_text="The byte the log expects next: the next batch starts here (an unfinished "
                        "line is not stored until its end comes, so it is sent again)."
                    ),
                    "stored": serializers.IntegerField(help_text="Lines this batch added to the log."),
                    "finished": serializers.BooleanField(help_text="The log of this instance takes no more."),
                },
            ),
            409: OpenApiResponse(
                description="`log_offset_gap`: the batch starts past the log's end, `expected_offset` says where "
                "to resend from; `log_finished`: this instance's log is closed; `no_current_instance`."
            ),
            404: OpenApiResponse(description="The token's workload no longer exists."),
            413: OpenApiResponse(description="`log_batch_too_large`: over 256 KiB of output in one batch."),
            **AGENT_ERRORS,
        },
        description="The instance's own output (its command's stdout and stderr, pushed by `agent/ship.py`) "
        "appended to the log of the workload's current instance by byte offset: bytes the log already has "
        "are skipped, so a resend is harmless. `final: true` stores the last unfinished line and closes the "
        "instance's log. Refused (403 `agent_token_read_only`) once the workload is terminated.",
    )
    def post(self, request):
        workload_id = _agent_workload_id(request)
        batch = LogBatchSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        instance, cursor, stored = services.workload_output_push(
            workload_id=workload_id,
            offset=batch.validated_data["offset"],
            data=batch.validated_data["data_b64"],
            final=batch.validated_data["final"],
            resume=batch.validated_data["resume"],
        )
        return Response(
            {
                "workload_id": str(workload_id),
                "instance_id": instance.instance_id,
                "offset": cursor.offset,
                "stored": stored,
                "finished": cursor.finished_at is not None,
            },
            status=status.HTTP_202_ACCEPTED,
        )
