from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from arbitrage.admin_login import admin_login
from arbitrage.api import errors
from arbitrage.health import healthz
from console.metrics import metrics_view

urlpatterns = [
    # Customers and API keys moved to the accounts app: old admin links still land on them.
    re_path(
        r"^admin/workloads/(?P<model>customer|apikey)/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/accounts/%(model)s/%(rest)s", query_string=True, permanent=True),
    ),
    # The admin's own login view, behind a limit on failed attempts (arbitrage/admin_login.py).
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("workloads.api.urls")),
    path("api/v1/placement/", include("placement.api.urls")),
    path("api/v1/", include("storage.api.urls")),
    path("api/v1/billing/", include("billing.api.urls")),
    path("storage/", include("storage.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = errors.json_bad_request
handler404 = errors.json_not_found
handler500 = errors.json_server_error
