from django.urls import path

from storage.api import views

prefix = "workloads/<uuid:workload_id>/storage/"

urlpatterns = [
    path(prefix + "uploads", views.UploadUrlView.as_view(), name="storage-upload-url"),
    path(prefix + "uploads/complete", views.UploadCompleteView.as_view(), name="storage-upload-complete"),
    path(prefix + "downloads", views.DownloadUrlView.as_view(), name="storage-download-url"),
    path(prefix + "objects", views.ObjectListView.as_view(), name="storage-objects"),
    path(prefix + "checkpoints", views.CheckpointListBeginView.as_view(), name="storage-checkpoints"),
    path(prefix + "checkpoints/latest", views.CheckpointLatestView.as_view(), name="storage-checkpoint-latest"),
    path(
        prefix + "checkpoints/<str:checkpoint_id>/complete",
        views.CheckpointCompleteView.as_view(),
        name="storage-checkpoint-complete",
    ),
]
