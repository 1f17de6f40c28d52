from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TemplatesAppConfig(AppConfig):
    name = "templates_app"
    verbose_name = _("Message templates")

    def ready(self) -> None:
        from templates_app.models import MessageTemplate, SubscriptionTemplate
        from wxnotify.memo import forget_lookups_on_change

        forget_lookups_on_change(MessageTemplate)
        forget_lookups_on_change(SubscriptionTemplate)
