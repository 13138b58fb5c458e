"""Storage API under a workload: thin views that validate, call one service and shape the answer.

Callers: the customer (API key) for any of its workloads, or the workload itself
(agent token ``wat_...``), which reaches only its own storage.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import AgentTokenAuthentication, ApiKeyAuthentication, WorkloadAgent
from accounts.permissions import AgentTokenWrites
from storage import selectors, services
from storage.api import schema  # noqa: F401 (registers the agent token's OpenAPI scheme)
from storage.api import serializers as s

ERROR = OpenApiResponse(description='Error: {"error": {status, code, message, fields?}}')
COMMON_ERRORS = {400: ERROR, 401: ERROR, 404: ERROR, 409: ERROR}


DOWNLOAD_URL = inline_serializer(
    "DownloadUrl",
    {"key": serializers.CharField(), "url": serializers.CharField(), "expires_at": serializers.DateTimeField()},
)


class CheckpointForRestoreSchema(s.CheckpointSerializer):
    """The schema of checkpoint_latest_data: the checkpoint with its manifest and download URLs."""

    manifest = serializers.DictField()
    manifest_url = serializers.CharField()
    chunks = serializers.ListField(child=serializers.DictField())
    expires_at = serializers.DateTimeField()

    class Meta(s.CheckpointSerializer.Meta):
        fields = [*s.CheckpointSerializer.Meta.fields, "manifest", "manifest_url", "chunks", "expires_at"]


def _workload_id(request, workload_id):
    """The workload's id if the caller may reach its storage; 404 otherwise (as for a missing one)."""
    if isinstance(request.user, WorkloadAgent):
        if request.user.workload_id != workload_id:
            raise Http404
        return workload_id
    # Through the customer's own relation: storage sits below workloads and does not import them.
    if not request.user.customer.workloads.filter(id=workload_id).exists():
        raise Http404
    return workload_id


class StorageView(APIView):
    authentication_classes = [AgentTokenAuthentication, ApiKeyAuthentication]
    # A terminated workload's agent token may only read (list, download) until its retention ends.
    permission_classes = [IsAuthenticated, AgentTokenWrites]


class UploadUrlView(StorageView):
    @extend_schema(
        operation_id="storage_upload_url",
        request=s.UploadRequestSerializer,
        responses={201: s.UploadTargetSerializer, 413: ERROR, **COMMON_ERRORS},
        description="A single-use upload target (PUT, POST with form fields, or MULTIPART with one URL per part). "
        "Its `max_bytes` (the declared `size_bytes`, else all the room left) is reserved from the quota until the "
        "upload is completed or its URL expires. Refused with 413 'Storage quota exceeded' when the used and "
        "reserved bytes leave no room for it, and 409 `storage_read_only` once the workload is terminated.",
    )
    def post(self, request, workload_id):
        workload_id = _workload_id(request, workload_id)
        body = s.UploadRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        target = services.storage_upload_url_create(workload_id=workload_id, **body.validated_data)
        data = s.upload_target_data(target, key=body.validated_data["key"])
        return Response(data, status=status.HTTP_201_CREATED)


class UploadCompleteView(StorageView):
    @extend_schema(
        operation_id="storage_upload_complete",
        request=s.UploadCompleteSerializer,
        responses={201: s.StorageObjectSerializer, 413: ERROR, **COMMON_ERRORS},
        description="Record an upload in the object index after checking the real object's size and SHA-256; "
        "its reservation is released. Once per upload URL: a key with no open upload is a 409 "
        "`upload_not_pending`. An upload over what its URL reserved is refused (413) and removed, as is any "
        "upload once the workload is terminated (409 `storage_read_only`).",
    )
    def post(self, request, workload_id):
        workload_id = _workload_id(request, workload_id)
        body = s.UploadCompleteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        stored = services.storage_upload_complete(workload_id=workload_id, **body.validated_data)
        return Response(s.StorageObjectSerializer(stored).data, status=status.HTTP_201_CREATED)


class DownloadUrlView(StorageView):
    agent_read_methods = ("POST",)  # asking for a download URL only reads

    @extend_schema(
        operation_id="storage_download_url",
        request=s.DownloadRequestSerializer,
        responses={200: DOWNLOAD_URL, **COMMON_ERRORS},
    )
    def post(self, request, workload_id):
        workload_id = _workload_id(request, workload_id)
        body = s.DownloadRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        url, expires_at = services.storage_download_url_create(workload_id=workload_id, **body.validated_data)
        return Response({"key": body.validated_data["key"], "url": url, "expires_at": expires_at.isoformat()})


class ObjectListView(StorageView, generics.GenericAPIView):
    serializer_class = s.StorageObjectSerializer

    @extend_schema(
        operation_id="storage_objects_list",
        parameters=[s.ObjectListQuerySerializer],
        responses={200: s.StorageObjectSerializer(many=True), **COMMON_ERRORS},
        description="The workload's objects under `prefix`, paginated (page, page_size <= 200).",
    )
    def get(self, request, workload_id):
        workload_id = _workload_id(request, workload_id)
        query = s.ObjectListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        objects = selectors.storage_object_list(workload_id=workload_id, prefix=query.validated_data.get("prefix", ""))
        page = self.paginate_queryset(objects)
        return self.get_paginated_response(s.StorageObjectSerializer(page, many=True).data)


class CheckpointListBeginView(StorageView, generics.GenericAPIView):
    serializer_class = s.CheckpointSerializer

    @extend_schema(
        operation_id="storage_checkpoints_list",
        responses={200: s.CheckpointSerializer(many=True), **COMMON_ERRORS},
        description="The workload's checkpoints, newest first, paginated (page, page_size <= 200).",
    )
    def get(self, request, workload_id):
        workload_id = _workload_id(request, workload_id)
        page = self.paginate_queryset(selectors.checkpoint_list(workload_id=workload_id))
        return self.get_paginated_response(s.CheckpointSerializer(page, many=True).data)

    @extend_schema(
        operation_id="storage_checkpoints_begin",
        request=s.CheckpointBeginSerializer,
        responses={201: s.CheckpointBeginResponseSerializer, 413: ERROR, **COMMON_ERRORS},
    )
    def post(self, request, workload_id):
        workload_id = _workload_id(request, workload_id)
        body = s.CheckpointBeginSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        begun = services.checkpoint_begin(workload_id=workload_id, **body.validated_data)
        return Response(s.checkpoint_begin_data(begun), status=status.HTTP_201_CREATED)


class CheckpointCompleteView(StorageView):
    @extend_schema(
        operation_id="storage_checkpoints_complete",
        request=None,
        responses={200: s.CheckpointSerializer, 413: ERROR, **COMMON_ERRORS},
        description="Verify every chunk against the manifest; 409 when one is missing or corrupt.",
    )
    def post(self, request, workload_id, checkpoint_id):
        workload_id = _workload_id(request, workload_id)
        checkpoint = services.checkpoint_complete(workload_id=workload_id, checkpoint_id=checkpoint_id)
        return Response(s.CheckpointSerializer(checkpoint).data)


class CheckpointLatestView(StorageView):
    @extend_schema(
        operation_id="storage_checkpoints_latest",
        parameters=[s.ExpiresInQuerySerializer],
        responses={
            200: OpenApiResponse(
                CheckpointForRestoreSchema, description="The newest complete checkpoint with download URLs"
            ),
            **COMMON_ERRORS,
        },
    )
    def get(self, request, workload_id):
        workload_id = _workload_id(request, workload_id)
        query = s.ExpiresInQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        latest = services.checkpoint_latest_for_restore(workload_id=workload_id, **query.validated_data)
        if latest is None:
            return Response(
                {"error": {"status": 404, "code": "no_checkpoint", "message": "No complete checkpoint."}},
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response(s.checkpoint_latest_data(latest))
