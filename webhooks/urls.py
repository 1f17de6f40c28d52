"""Routes of ``/api/v1/webhooks/`` (included by ``wxnotify.urls``)."""

from rest_framework.routers import SimpleRouter

from webhooks.api import EndpointViewSet

app_name = "webhooks"

router = SimpleRouter()
router.register("webhooks", EndpointViewSet, basename="endpoint")

urlpatterns = router.urls
