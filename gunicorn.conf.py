"""gunicorn settings of wxnotify's web processes; ``gunicorn wxnotify.wsgi`` run from this directory reads them.

Command-line options (or ``GUNICORN_CMD_ARGS``) override what is set here.
"""

import gc
import os
from typing import Any

# The shape bench/pipeline.py measures (bench/RESULTS.md): one worker per core, threads for requests that wait
# on the database, Redis or WeChat.
workers = 2
threads = 8

# The scheme comes from the one header the TLS proxy sets and Django reads (SECURE_PROXY_SSL_HEADER), from the proxy's
# addresses (FORWARDED_ALLOW_IPS, gunicorn's own variable, which wxnotify reads too) and only behind one: without
# WXNOTIFY_BEHIND_PROXY no peer may claim HTTPS, as docs/security.md says.
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
if os.environ.get("WXNOTIFY_BEHIND_PROXY", "").strip().lower() not in {"1", "true", "yes", "on"}:
    forwarded_allow_ips = ""


def post_worker_init(worker: Any) -> None:
    """Keep what start-up loaded (Django, every app, the URLconf and the views it imports) out of full garbage
    collections.

    A worker holds a few hundred thousand long-lived objects, and a full collection walks all of them while no
    thread of the worker runs: about 50 ms on this project's 2-core bench machine, every few hundred requests,
    which lands in the API's p99.  Frozen objects are skipped; the pauses drop to a few milliseconds.
    """
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the URLconf and the views now, so they are frozen too
    gc.collect()
    gc.freeze()
