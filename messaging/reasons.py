"""The reasons a message fails without an errcode from WeChat, in the words stored on the message (English, like
WeChat's own errmsg; the admin, console and API show the errcode's meaning in the reader's language)."""

UNSUBSCRIBED_REASON = "The recipient no longer follows the account; not sent to WeChat."
CANCELLED_REASON = "Cancelled with its campaign."
REJECTED_REASON = "Its campaign was rejected at approval; not sent to WeChat."
