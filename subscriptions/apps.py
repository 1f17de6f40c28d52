from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SubscriptionsConfig(AppConfig):
    """The consent ledger of subscription notifications: who accepted which template, how often, who refused."""

    name = "subscriptions"
    verbose_name = _("Subscription consent")
