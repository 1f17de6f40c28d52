from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TemplatesAppConfig(AppConfig):
    name = "templates_app"
    verbose_name = _("Message templates")
