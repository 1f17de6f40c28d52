from axes.apps import AppConfig as AxesConfig
from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _
from django_q.apps import DjangoQConfig


def ensure_cache_table(using: str = "default", **kwargs) -> None:
    """Create the database cache table after migrate, so the embedded default needs no extra step."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)


class TaskQueueConfig(DjangoQConfig):
    """django_q itself, named in the admin's language: django_q takes its name from a setting, never translated."""

    verbose_name = _("Task queue")


class SignInThrottlingConfig(AxesConfig):
    """django-axes, named in the admin's language (its own name is the untranslated label "Axes")."""

    verbose_name = _("Sign-in throttling")


class WxnotifyConfig(AppConfig):
    """Project-level hooks: nothing here owns models (``wxnotify.wechat`` must stay model-free)."""

    name = "wxnotify"
    verbose_name = _("wxnotify")

    def ready(self) -> None:
        # No sender: Django sends post_migrate only for apps with a models module, and this one has none.
        post_migrate.connect(ensure_cache_table, dispatch_uid="wxnotify.ensure_cache_table")
