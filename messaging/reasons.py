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
# Subscription notifications (the subscriptions ledger): refused before any WeChat call, which would answer 43101.
CONSENT_REJECTED_REASON = "Refused: the user refused this subscription notification; not sent to WeChat."
CONSENT_NO_CREDIT_REASON = (
    "No consent: the user holds no subscription to this notification (never accepted, or used up); not sent to WeChat."
)
# Channel auto with neither channel open for the recipient.
NO_CHANNEL_REASON = (
    "No channel: the user does not follow the account (or the template does not fit) and holds no subscription to "
    "the notification; not sent to WeChat."
)
