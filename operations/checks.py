"""System checks of the operations endpoints, run by ``manage.py check --deploy``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def metrics_reachable(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Warn when production leaves ``/metrics`` unreachable by anyone: no token and not public on purpose.

    That answers 404 to Prometheus too, which an operator would otherwise only find out from an empty dashboard.
    """
    if settings.DEBUG or settings.WXNOTIFY_METRICS_TOKEN or settings.WXNOTIFY_METRICS_PUBLIC:
        return []
    return [
        Warning(
            "/metrics answers 404 to everyone and /healthz gives no details: neither WXNOTIFY_METRICS_TOKEN nor "
            "WXNOTIFY_METRICS_PUBLIC is set.",
            hint="Set WXNOTIFY_METRICS_TOKEN (at least 16 characters) and give it to Prometheus as a bearer token, "
            "or WXNOTIFY_METRICS_PUBLIC=1 when only Prometheus reaches this port.",
            id="operations.W001",
        )
    ]
