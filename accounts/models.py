from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from wxnotify.wechat.client import Credentials

appid_validator = RegexValidator(
    regex=r"^wx[0-9a-f]{16}$",
    message=_("An AppID is 'wx' followed by 16 lowercase hexadecimal characters."),
)
encoding_aes_key_validator = RegexValidator(
    regex=r"^[A-Za-z0-9]{43}$",
    message=_("An EncodingAESKey is exactly 43 letters and digits."),
)


class OfficialAccount(models.Model):
    """A WeChat Official Account (公众号/服务号) we send template messages for and receive callbacks from."""

    class MessageMode(models.TextChoices):
        PLAINTEXT = "plaintext", _("Plaintext")
        COMPATIBLE = "compatible", _("Compatible")
        SAFE = "safe", _("Safe (AES)")

    class TokenEndpoint(models.TextChoices):
        STABLE = "stable", _("stable_token (recommended)")
        CLASSIC = "classic", _("token (classic)")

    name = models.CharField(_("name"), max_length=100)
    appid = models.CharField(_("AppID"), max_length=32, unique=True, validators=[appid_validator])
    app_secret = models.CharField(_("AppSecret"), max_length=64)
    token = models.CharField(
        _("callback token"),
        max_length=32,
        help_text=_("The Token configured in WeChat's server settings; signs callback requests."),
    )
    encoding_aes_key = models.CharField(
        _("EncodingAESKey"), max_length=43, blank=True, validators=[encoding_aes_key_validator]
    )
    message_mode = models.CharField(
        _("message mode"), max_length=16, choices=MessageMode.choices, default=MessageMode.PLAINTEXT
    )
    token_endpoint = models.CharField(
        _("token endpoint"), max_length=16, choices=TokenEndpoint.choices, default=TokenEndpoint.STABLE
    )
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("official account")
        verbose_name_plural = _("official accounts")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.appid})"

    def credentials(self) -> Credentials:
        """What the WeChat client needs to fetch this account's access_token."""
        return Credentials(appid=self.appid, secret=self.app_secret, token_endpoint=self.token_endpoint)
