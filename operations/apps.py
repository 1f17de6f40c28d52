from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OperationsConfig(AppConfig):
    """Operations: the admin dashboard, ``/healthz``, ``/metrics`` and the demo supervisor; no models of its own."""

    name = "operations"
    verbose_name = _("Operations")

    def ready(self) -> None:
        from operations import metrics
        from wxnotify.wechat.tokens import token_fetched

        # A signal rather than a call inside the token manager: wxnotify.wechat stays free of metrics code.
        token_fetched.connect(metrics.count_token_fetch, dispatch_uid="operations.count_token_fetch")
