from django.contrib import admin
from django.urls import path

from operations import views

app_name = "operations"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    # Under admin/ and in the admin's look; before admin.site.urls in the root URLconf, which claims admin/<app>/.
    path("admin/ops/dashboard/", admin.site.admin_view(views.dashboard), name="dashboard"),
]
