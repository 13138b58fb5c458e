from django.urls import path

from storage import views

urlpatterns = [
    path("objects/<path:key>", views.signed_object, name="storage-signed-object"),
]
