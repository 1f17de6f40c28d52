from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from accounts.fields import EncryptedTextField
from wxnotify.wechat.client import Credentials, is_allowed_source_url

appid_validator = RegexValidator(
    regex=r"^wx[0-9a-f]{16}$",
    message=_("An AppID is 'wx' followed by 16 lowercase hexadecimal characters."),
)
encoding_aes_key_validator = RegexValidator(
    regex=r"^[A-Za-z0-9]{43}$",
    message=_("An EncodingAESKey is exactly 43 letters and digits."),
)


# A week: longer windows would make the look-up of a user's recent messages (and the admin's promise) meaningless.
MAX_DUPLICATE_WINDOW_MINUTES = 7 * 24 * 60


def time_zone_validator(value: str) -> None:
    """Only IANA zone names the machine's zone database knows (e.g. Asia/Shanghai), so ``ZoneInfo`` never fails."""
    if value not in available_timezones():
        raise ValidationError(_("Give an IANA time zone name such as Asia/Shanghai."), code="invalid_time_zone")


class OfficialAccount(models.Model):
    """A WeChat Official Account (公众号/服务号) we send template messages for and receive callbacks from."""

    class MessageMode(models.TextChoices):
        PLAINTEXT = "plaintext", _("Plaintext")
        COMPATIBLE = "compatible", _("Compatible")
        SAFE = "safe", _("Safe (AES)")

    class TokenEndpoint(models.TextChoices):
        STABLE = "stable", _("stable_token (recommended)")
        CLASSIC = "classic", _("token (classic)")
        EXTERNAL = "external", _("external token source")

    name = models.CharField(_("name"), max_length=100)
    appid = models.CharField(_("AppID"), max_length=32, unique=True, validators=[appid_validator])
    app_secret = EncryptedTextField(_("AppSecret"), help_text=_("Stored encrypted; never shown again once saved."))
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
    token_source_url = EncryptedTextField(
        _("token source URL"),
        blank=True,
        help_text=_(
            "With an external token source: the HTTPS URL of the token authority that owns this account's "
            "access_token, answering {access_token, expires_in}. Stored encrypted."
        ),
    )
    token_source_secret = EncryptedTextField(
        _("token source secret"),
        blank=True,
        help_text=_("Sent to the token source as 'Authorization: Bearer <secret>'. Stored encrypted."),
    )
    is_active = models.BooleanField(pgettext_lazy("official account", "active"), default=True)
    welcome_reply = models.TextField(
        _("welcome reply"),
        max_length=600,
        blank=True,
        help_text=_("Sent as a text reply to everyone who follows the account; leave empty to send nothing."),
    )
    send_rate_limit = models.PositiveIntegerField(
        _("send rate limit"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Most template messages per second for this account; empty means no limit of our own."),
    )
    time_zone = models.CharField(
        _("time zone"),
        max_length=64,
        default="Asia/Shanghai",
        validators=[time_zone_validator],
        help_text=_("The zone of the account's audience: its days and quiet hours are counted in it."),
    )
    duplicate_window_minutes = models.PositiveIntegerField(
        _("duplicate window (minutes)"),
        null=True,
        blank=True,
        validators=[MaxValueValidator(MAX_DUPLICATE_WINDOW_MINUTES)],
        help_text=_(
            "A message with the same template, data and link to the same user within this many minutes of an "
            "earlier one is not sent again: the API answers with the earlier message. Empty or 0: off."
        ),
    )
    quiet_start = models.TimeField(
        _("quiet hours start"),
        null=True,
        blank=True,
        help_text=_("Campaign messages wait from this time (in the account's time zone); empty: no quiet hours."),
    )
    quiet_end = models.TimeField(
        _("quiet hours end"),
        null=True,
        blank=True,
        help_text=_("… until this time; a window may run across midnight (e.g. 22:00 to 08:00)."),
    )
    operators = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("operators"),
        related_name="operated_accounts",
        blank=True,
        help_text=_("Business staff allowed to use this account."),
    )
    last_error_code = models.IntegerField(_("last WeChat error code"), null=True, blank=True, editable=False)
    last_error_message = models.CharField(_("last WeChat error"), max_length=500, blank=True, editable=False)
    last_error_at = models.DateTimeField(_("last WeChat error at"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("official account")
        verbose_name_plural = _("official accounts")
        ordering = ["name"]
        permissions = [
            ("read_access_token", _("Can read the access_token of the accounts one operates (token API)")),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.appid})"

    @property
    def zone(self) -> ZoneInfo:
        """The account's time zone, for the rules that speak of days and hours (quiet hours, daily caps)."""
        return ZoneInfo(self.time_zone)

    @property
    def has_quiet_hours(self) -> bool:
        return self.quiet_start is not None and self.quiet_end is not None

    def quiet_hours_end(self, now: datetime) -> datetime | None:
        """When the quiet window that ``now`` falls in opens again (aware, in the account's zone); None outside one.

        The window is [start, end) in the account's wall-clock time: 22:00-08:00 holds 22:00 and 07:59 but not
        08:00.  A wall-clock end that a DST change skips or repeats is resolved by ``zoneinfo`` (fold 0).
        """
        if not self.has_quiet_hours:
            return None
        local = now.astimezone(self.zone)
        clock = local.time().replace(tzinfo=None)
        start, end = self.quiet_start, self.quiet_end
        if start < end:
            inside = start <= clock < end
            end_day = local.date()
        else:
            inside = clock >= start or clock < end
            end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
        if not inside:
            return None
        return datetime.combine(end_day, end, tzinfo=self.zone)

    def clean(self) -> None:
        """Encrypted callbacks cannot be read or answered without the EncodingAESKey; an external token source needs
        its URL (https, or http to this host only) and its secret."""
        super().clean()
        errors = {}
        if self.message_mode != self.MessageMode.PLAINTEXT and not self.encoding_aes_key:
            errors["encoding_aes_key"] = _("An EncodingAESKey is required in compatible and safe message modes.")
        if self.token_endpoint == self.TokenEndpoint.EXTERNAL:
            if not is_allowed_source_url(self.token_source_url):
                errors["token_source_url"] = _("Give the token source's https URL (http only to 127.0.0.1).")
            if not self.token_source_secret:
                errors["token_source_secret"] = _("Give the secret the token source expects.")
        if (self.quiet_start is None) != (self.quiet_end is None):
            errors["quiet_end" if self.quiet_end is None else "quiet_start"] = _(
                "Give both ends of the quiet hours, or neither."
            )
        elif self.has_quiet_hours and self.quiet_start == self.quiet_end:
            errors["quiet_end"] = _("The quiet hours must end at another time than they start.")
        if errors:
            raise ValidationError(errors)

    def callback_path(self) -> str:
        """The path of this account's callback endpoint (the URL configured in WeChat's console)."""
        return f"/wechat/callback/{self.appid}/"

    def callback_url(self) -> str:
        """The absolute callback URL to paste into WeChat's console, on ``WXNOTIFY_PUBLIC_BASE_URL``."""
        return f"{settings.WXNOTIFY_PUBLIC_BASE_URL}{self.callback_path()}"

    def credentials(self) -> Credentials:
        """What the WeChat client needs to fetch this account's access_token."""
        return Credentials(
            appid=self.appid,
            secret=self.app_secret,
            token_endpoint=self.token_endpoint,
            source_url=self.token_source_url,
            source_secret=self.token_source_secret,
        )


class Follower(models.Model):
    """A WeChat user who follows (or once followed) an account, known by the account-specific openid.

    ``user`` binds the follower to one of our users so messages can be addressed to people; syncing
    from WeChat never touches it.
    """

    class Source(models.TextChoices):
        CALLBACK = "callback", _("subscribe callback")
        SYNC = "sync", _("follower sync")
        QR = "qr", _("QR code scan")

    account = models.ForeignKey(
        OfficialAccount, verbose_name=_("official account"), on_delete=models.CASCADE, related_name="followers"
    )
    openid = models.CharField(_("openid"), max_length=64)
    unionid = models.CharField(_("unionid"), max_length=64, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("bound user"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="wechat_followers",
    )
    subscribed = models.BooleanField(_("subscribed"), default=True)
    subscribed_at = models.DateTimeField(_("subscribed at"), null=True, blank=True)
    unsubscribed_at = models.DateTimeField(_("unsubscribed at"), null=True, blank=True)
    source = models.CharField(_("source"), max_length=16, choices=Source.choices, default=Source.SYNC)
    remark = models.CharField(_("remark"), max_length=100, blank=True)
    subscribe_scene = models.CharField(_("subscribe scene"), max_length=64, blank=True)
    qr_scene_str = models.CharField(_("QR scene"), max_length=64, blank=True)
    last_interaction_at = models.DateTimeField(_("last interaction at"), null=True, blank=True)
    synced_at = models.DateTimeField(_("synced at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("follower")
        verbose_name_plural = _("followers")
        ordering = ["account", "-subscribed_at", "openid"]
        constraints = [
            models.UniqueConstraint(fields=["account", "openid"], name="accounts_follower_unique_openid"),
        ]
        indexes = [
            models.Index(fields=["account", "subscribed"], name="accounts_fol_subscribed_idx"),
            models.Index(fields=["account", "user"], name="accounts_fol_user_idx"),
            models.Index(fields=["unionid"], name="accounts_fol_unionid_idx"),
        ]

    def __str__(self) -> str:
        return self.openid


class FollowerSync(models.Model):
    """One run of "sync followers from WeChat", kept so the admin can show its progress and outcome."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")

    account = models.ForeignKey(
        OfficialAccount, verbose_name=_("official account"), on_delete=models.CASCADE, related_name="follower_syncs"
    )
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(_("followers at WeChat"), null=True, blank=True)
    processed = models.PositiveIntegerField(_("processed"), default=0)
    created = models.PositiveIntegerField(_("new followers"), default=0)
    updated = models.PositiveIntegerField(_("updated followers"), default=0)
    unsubscribed = models.PositiveIntegerField(_("marked unsubscribed"), default=0)
    error = models.TextField(_("error"), blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    queued_at = models.DateTimeField(_("queued at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("follower sync")
        verbose_name_plural = _("follower syncs")
        ordering = ["-queued_at", "-id"]
        indexes = [models.Index(fields=["account", "-queued_at"], name="accounts_fsync_latest_idx")]

    def __str__(self) -> str:
        return f"{self.account.appid} {self.get_status_display()} {self.progress_text()}"

    def progress_text(self) -> str:
        """Progress as "processed/total" once WeChat told the total, else just the processed count."""
        if self.total is None:
            return str(self.processed)
        return f"{self.processed}/{self.total}"


class AccessTokenRead(models.Model):
    """One answer of the token API (``/api/v1/accounts/<appid>/access-token/``), kept so that who obtained an
    account's access_token, when and from where can be told afterwards.  Never the token itself."""

    account = models.ForeignKey(
        OfficialAccount, verbose_name=_("official account"), on_delete=models.CASCADE, related_name="token_reads"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Kept as written at the time: the user may be renamed or deleted later.
    username = models.CharField(_("username"), max_length=150)
    # None when the request carried no usable address (see wxnotify.login_throttling.client_address).
    address = models.GenericIPAddressField(_("address"), unpack_ipv4=True, null=True, blank=True)
    min_ttl = models.PositiveIntegerField(_("minimum validity asked (s)"))
    refreshed = models.BooleanField(_("fetched from WeChat"), help_text=_("Whether this read made WeChat issue one."))
    expires_at = models.DateTimeField(_("token expires at"))
    read_at = models.DateTimeField(_("read at"), auto_now_add=True)

    class Meta:
        verbose_name = _("access_token read")
        verbose_name_plural = _("access_token reads")
        ordering = ["-read_at", "-id"]
        indexes = [models.Index(fields=["account", "-read_at"], name="accounts_tokenread_latest_idx")]

    def __str__(self) -> str:
        return f"{self.account.appid} {self.username} {self.read_at:%Y-%m-%d %H:%M:%S}"


class TokenConflict(models.Model):
    """WeChat rejected (40001/42001) an access_token we held as fresh: another system replaced it, most likely by
    fetching tokens with the same AppSecret.  Recorded once per rejected token; a few within an hour raise an alarm
    (``accounts.selectors.token_conflict_alarms``)."""

    account = models.ForeignKey(
        OfficialAccount, verbose_name=_("official account"), on_delete=models.CASCADE, related_name="token_conflicts"
    )
    errcode = models.IntegerField(_("WeChat error code"))
    detected_at = models.DateTimeField(_("detected at"), auto_now_add=True)

    class Meta:
        verbose_name = _("access_token conflict")
        verbose_name_plural = _("access_token conflicts")
        ordering = ["-detected_at", "-id"]
        indexes = [models.Index(fields=["account", "-detected_at"], name="accounts_tokenconflict_idx")]

    def __str__(self) -> str:
        return f"{self.account.appid} {self.errcode} {self.detected_at:%Y-%m-%d %H:%M:%S}"


class QuotaReading(models.Model):
    """The latest daily quota WeChat reported for the account's template sends (``/cgi-bin/openapi/quota/get``).

    One row per account, overwritten by every poll (``accounts.services.quota``): WeChat's own count is the truth,
    ours would miss sends by other systems with the same account.  The numbers are those of the Beijing day of
    ``read_at``; a reading from an earlier day says nothing of today's ``used``.
    """

    account = models.OneToOneField(
        OfficialAccount, verbose_name=_("official account"), on_delete=models.CASCADE, related_name="quota_reading"
    )
    daily_limit = models.PositiveIntegerField(_("daily limit"))
    used = models.PositiveIntegerField(_("used today"))
    remain = models.PositiveIntegerField(_("remaining today"))
    read_at = models.DateTimeField(_("read at"))

    class Meta:
        verbose_name = _("template send quota")
        verbose_name_plural = _("template send quotas")

    def __str__(self) -> str:
        return f"{self.account.appid} {self.used}/{self.daily_limit}"


class QuotaClear(models.Model):
    """One "clear quota" an admin asked for (``/cgi-bin/clear_quota``): WeChat allows 10 per account a month, so the
    successful ones of the current month are counted and an 11th is refused before WeChat is asked."""

    account = models.ForeignKey(
        OfficialAccount, verbose_name=_("official account"), on_delete=models.CASCADE, related_name="quota_clears"
    )
    cleared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("cleared by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    succeeded = models.BooleanField(_("succeeded"))
    error = models.CharField(_("error"), max_length=500, blank=True)
    cleared_at = models.DateTimeField(_("cleared at"), auto_now_add=True)

    class Meta:
        verbose_name = _("quota clear")
        verbose_name_plural = _("quota clears")
        ordering = ["-cleared_at", "-id"]
        indexes = [models.Index(fields=["account", "-cleared_at"], name="accounts_quotaclear_idx")]

    def __str__(self) -> str:
        return f"{self.account.appid} {self.cleared_at:%Y-%m-%d %H:%M:%S}"
