from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OpsConfig(AppConfig):
    """Operations: the admin dashboard, ``/healthz`` and ``/metrics``; no models of its own."""

    name = "wxnotify.ops"
    label = "ops"
    verbose_name = _("Operations")

    def ready(self) -> None:
        from wxnotify.ops import metrics
        from wxnotify.wechat.tokens import token_fetched

        # A signal rather than a call inside the token manager: wxnotify.wechat stays free of metrics code.
        token_fetched.connect(metrics.count_token_fetch, dispatch_uid="wxnotify.ops.count_token_fetch")
