"""Routes of the staff console, included under ``/console/`` with the ``console`` namespace."""

from django.urls import path

from messaging.console import views

app_name = "console"

urlpatterns = [
    path("", views.compose, name="compose"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("validate/", views.validate, name="validate"),
    path("recipients/count/", views.count, name="count"),
    path("followers/", views.followers, name="followers"),
    path("campaigns/<int:pk>/", views.campaign_detail, name="campaign"),
    path("campaigns/<int:pk>/progress/", views.campaign_progress, name="campaign-progress"),
    path("campaigns/<int:pk>/cancel/", views.campaign_cancel, name="campaign-cancel"),
    path("campaigns/<int:pk>/reschedule/", views.campaign_reschedule, name="campaign-reschedule"),
    path("campaigns/<int:pk>/approve/", views.campaign_approve, name="campaign-approve"),
    path("campaigns/<int:pk>/reject/", views.campaign_reject, name="campaign-reject"),
    path("campaigns/<int:pk>/retry-failed/", views.campaign_retry_failed, name="campaign-retry-failed"),
    path("history/", views.history, name="history"),
]
