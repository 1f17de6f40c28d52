"""In-memory state of the fake WeChat API: accounts, followers, tokens, sent messages and faults.

Everything here is plain Python guarded by one lock, so the HTTP server can serve hundreds of
connections from threads and tests can read and change the state directly, without HTTP or the ORM.

Config format (a JSON file for ``manage.py wechat_sandbox --config``, or a dict for ``SandboxState``)::

    {
      "accounts": [
        {
          "appid": "wx0123456789abcdef",            # required
          "secret": "0123...",                       # required, the AppSecret /cgi-bin/token checks
          "token": "callbacktoken",                  # callback Token that signs our pushes
          "encoding_aes_key": "43 letters/digits",   # needed for "safe" and "compatible"
          "mode": "plaintext" | "compatible" | "safe",
          "callback_format": "xml" | "json",         # how pushes are written (WeChat's push setting); "xml"
          "original_id": "gh_0123456789ab",          # ToUserName of pushes; derived from appid if absent
          "callback_url": "http://127.0.0.1:8000/wechat/callback/wx0123456789abcdef/",  # "" = no pushes
          "followers": 1000,                         # N seeded followers, or an explicit list of openids
          "templates": [{"template_id": "...", "title": "...", "primary_industry": "...",
                         "deputy_industry": "...", "content": "{{thing1.DATA}}...", "example": "..."}],
          "subscription_categories": [616, 670],     # library categories set; all of them if absent
          "subscription_templates": [{"pri_tmpl_id": "...", "tid": 1082, "kid_list": [1, 2, 3],
                                      "scene_desc": "..."}]   # added from the library; none if absent
        }
      ],
      "faults": {"latency_ms": 0, "user_latency_ms": 0, "error_rate": 0.0, "error_code": -1,
                 "token_ttl": 7200, "receipts": true, "receipt_delay_ms": 300,
                 "drop_reply_rate": 0.0, "drop_reply_mode": "close", "drop_reply_hang_ms": 30000,
                 "dedupe_window_s": 600, "bizsend_msgid": true, "sent_event_error_code": 0}
    }

Without ``templates`` an account gets the demo templates.  Seeded followers (``followers`` as a number)
have deterministic 28-character openids (``seeded_openid(appid, i)``) and come with a few special ones
whose prefix picks the outcome of a send: ``unsub_…`` (known but not following: 43004), ``block_…``
(43101), ``rblock_…`` / ``rfail_…`` (accepted, then reported ``failed:user block`` / ``failed: system
failed`` in TEMPLATESENDJOBFINISH).  ``reset()`` returns to exactly this configuration.

The state is split by API area: ``accounts`` (accounts, followers, counters), ``tokens``, ``templates`` and
``sends`` (template sends with de-duplication), ``subscriptions`` (the subscription template library, added
templates, users' consent and bizsend), ``users``, ``qrcodes``, ``simulation`` (simulated users),
``receipts``, ``faults``, ``api_faults`` (one API answering wrong), ``request_log`` (what clients sent) and
``errors``; ``store`` assembles them into :class:`SandboxState`.  Every name is importable from
``sandbox.state`` itself.
"""

from sandbox.state.accounts import (
    FOLLOWER_PAGE_SIZE,
    SPECIAL_FOLLOWERS_PER_PREFIX,
    SUBSCRIBE_SCENES,
    Account,
    Counters,
    Follower,
    seeded_openid,
    special_openids,
)
from sandbox.state.api_faults import API_FAULT_DROPS, WECHAT_APIS, ApiFault
from sandbox.state.errors import ERRMSG, ReplyDropped, SandboxError
from sandbox.state.faults import DEDUPE_WINDOW_S, DROP_CLOSE, DROP_HANG, DROP_MIXED, DROP_REPLY_MODES, Faults
from sandbox.state.qrcodes import QR_DEFAULT_EXPIRE_S, QR_LIMIT_SCENE_MAX, QR_MAX_EXPIRE_S, QrTicket
from sandbox.state.receipts import RECEIPT_STATUS_BY_PREFIX
from sandbox.state.request_log import REQUEST_LOG_CAPACITY, ReceivedRequest
from sandbox.state.sends import NON_ASCII_ESCAPE_RE, SendRecord
from sandbox.state.store import SandboxState
from sandbox.state.subscription_templates import SUBSCRIPTION_TEMPLATES_MAX, SubscriptionTemplate
from sandbox.state.templates import KEYWORD_RE, THING_MAX_CHARS, TRAILING_DIGITS_RE, Template, keyword_type
from sandbox.state.tokens import CLASSIC_OVERLAP_S, IssuedToken
from sandbox.state.users import BATCHGET_MAX

__all__ = [
    "API_FAULT_DROPS",
    "BATCHGET_MAX",
    "CLASSIC_OVERLAP_S",
    "DEDUPE_WINDOW_S",
    "DROP_CLOSE",
    "DROP_HANG",
    "DROP_MIXED",
    "DROP_REPLY_MODES",
    "ERRMSG",
    "FOLLOWER_PAGE_SIZE",
    "KEYWORD_RE",
    "NON_ASCII_ESCAPE_RE",
    "QR_DEFAULT_EXPIRE_S",
    "QR_LIMIT_SCENE_MAX",
    "QR_MAX_EXPIRE_S",
    "RECEIPT_STATUS_BY_PREFIX",
    "REQUEST_LOG_CAPACITY",
    "SPECIAL_FOLLOWERS_PER_PREFIX",
    "SUBSCRIBE_SCENES",
    "SUBSCRIPTION_TEMPLATES_MAX",
    "THING_MAX_CHARS",
    "TRAILING_DIGITS_RE",
    "WECHAT_APIS",
    "Account",
    "ApiFault",
    "Counters",
    "Faults",
    "Follower",
    "IssuedToken",
    "QrTicket",
    "ReceivedRequest",
    "ReplyDropped",
    "SandboxError",
    "SandboxState",
    "SendRecord",
    "SubscriptionTemplate",
    "Template",
    "keyword_type",
    "seeded_openid",
    "special_openids",
]
