from django.urls import path

from callbacks import views

app_name = "callbacks"

urlpatterns = [
    path("wechat/callback/<str:appid>/", views.wechat_callback, name="wechat-callback"),
]
