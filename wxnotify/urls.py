from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from wxnotify.http_errors import not_found as api_not_found

urlpatterns = [
    # /healthz, /metrics and the admin's operations dashboard (before admin.site.urls, which claims admin/<app>/).
    path("", include("operations.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("messaging.api.urls")),
    path("api/v1/", include("webhooks.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # Last under /api/: unknown API URLs answer JSON, never Django's HTML 404 page.
    re_path(r"^api/", api_not_found),
    path("console/", include("messaging.console.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("callbacks.urls")),
    path("", include("accounts.urls")),
]

# JSON under /api/, Django's pages elsewhere.
handler400 = "wxnotify.http_errors.bad_request"
handler500 = "wxnotify.http_errors.server_error"
