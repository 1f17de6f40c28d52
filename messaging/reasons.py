"""The reasons a message fails without an errcode from WeChat, in the words stored on the message (English, like
WeChat's own errmsg; the admin, console and API show the errcode's meaning in the reader's language)."""

UNSUBSCRIBED_REASON = "The recipient no longer follows the account; not sent to WeChat."
CANCELLED_REASON = "Cancelled with its campaign."
# Our sending rules (messaging.caps, messaging.services.duplicates): each starts with its one-word reason.
CAPPED_REASON = "Capped: the account's daily cap for this user is reached; not sent to WeChat."
CAPPED_HELD_REASON = "Capped: the account's daily cap for this user is reached; held to the next day."
DUPLICATE_REASON = (
    "Duplicate: the same content went to this user within the account's duplicate window; not sent again."
)
REJECTED_REASON = "Its campaign was rejected at approval; not sent to WeChat."
