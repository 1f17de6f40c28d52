from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OperationsConfig(AppConfig):
    """Operations: the admin dashboard, ``/healthz``, ``/metrics`` and the demo supervisor; no models of its own."""

    name = "operations"
    verbose_name = _("Operations")

    def ready(self) -> None:
        from django.conf import settings

        from operations import checks, metrics  # noqa: F401  (checks registers itself)
        from wxnotify.log import register_secret
        from wxnotify.wechat.tokens import token_conflict, token_fetched

        # The bearer token of /metrics and /healthz is a secret like an AppSecret: masked in every log line.
        register_secret(settings.WXNOTIFY_METRICS_TOKEN)

        # A signal rather than a call inside the token manager: wxnotify.wechat stays free of metrics code.
        token_fetched.connect(metrics.count_token_fetch, dispatch_uid="operations.count_token_fetch")
        token_conflict.connect(metrics.count_token_conflict, dispatch_uid="operations.count_token_conflict")
