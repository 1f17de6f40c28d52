from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("bind/", views.bind, name="bind"),
    path("bind/<str:appid>/unbind/", views.unbind, name="unbind"),
]
