"""Routes of ``/api/v1/`` (included by ``wxnotify.urls`` under the ``api`` namespace)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from messaging.api import subscriptions, tokens, views

app_name = "api"

router = SimpleRouter()
router.register("messages", views.MessageViewSet, basename="message")
router.register("campaigns", views.CampaignViewSet, basename="campaign")
router.register("followers", views.FollowerViewSet, basename="follower")
router.register("templates", views.TemplateViewSet, basename="template")
router.register("subscriptions", subscriptions.SubscriptionViewSet, basename="subscription")

urlpatterns = [
    *router.urls,
    path("accounts/<str:appid>/access-token/", tokens.AccessTokenView.as_view(), name="account-access-token"),
]
