"""HTTP client for the WeChat Official Account API (being written: see issue 2)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Credentials:
    """What it takes to fetch an account's access_token; ``secret`` never shows in a repr."""

    appid: str
    secret: str = field(repr=False)
    token_endpoint: str = "stable"
