from django.urls import path

from callbacks import views
from callbacks.middleware import CALLBACK_PATH_PREFIX

app_name = "callbacks"

urlpatterns = [
    # Under the prefix the middleware chain ends early (callbacks.middleware); the project includes these at the root.
    path(f"{CALLBACK_PATH_PREFIX.removeprefix('/')}<str:appid>/", views.wechat_callback, name="wechat-callback"),
]
