from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SandboxConfig(AppConfig):
    """A fake WeChat API server for the demo, the tests and the benchmarks (no models)."""

    name = "sandbox"
    verbose_name = _("WeChat sandbox")
