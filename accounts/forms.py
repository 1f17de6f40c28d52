"""Admin forms that accept secrets but never send them back to the browser."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from accounts.models import OfficialAccount

# Fields whose stored value must never be rendered: a password input, blank on change keeps the stored one.
SECRET_FIELDS = {
    "app_secret": _("Replace AppSecret"),
    "encoding_aes_key": _("Replace EncodingAESKey"),
    "token_source_url": _("Replace token source URL"),
    "token_source_secret": _("Replace token source secret"),
}
_PASSWORD_INPUT = {"autocomplete": "new-password"}


class OfficialAccountAdminForm(forms.ModelForm):
    class Meta:
        model = OfficialAccount
        fields = [
            "name",
            "appid",
            "is_active",
            "operators",
            "send_rate_limit",
            "time_zone",
            "quiet_start",
            "quiet_end",
            "app_secret",
            "token_endpoint",
            "token_source_url",
            "token_source_secret",
            "token",
            "message_mode",
            "encoding_aes_key",
            "welcome_reply",
        ]
        widgets = {name: forms.PasswordInput(render_value=False, attrs=_PASSWORD_INPUT) for name in SECRET_FIELDS}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        editing = self.instance.pk is not None
        for name, change_label in SECRET_FIELDS.items():
            field = self.fields.get(name)
            if field is None:
                continue
            # The initial value would only be used to detect changes; keep it out of the form entirely.
            self.initial.pop(name, None)
            if editing:
                field.label = change_label
                field.required = False
                field.help_text = _("Leave blank to keep the current value.")
        if "app_secret" in self.fields and not editing:
            self.fields["app_secret"].required = True

    def _keep_stored(self, name: str) -> str:
        value = self.cleaned_data.get(name, "")
        if not value and self.instance.pk is not None:
            return getattr(self.instance, name)
        return value

    def clean_app_secret(self) -> str:
        return self._keep_stored("app_secret")

    def clean_encoding_aes_key(self) -> str:
        return self._keep_stored("encoding_aes_key")

    def clean_token_source_url(self) -> str:
        return self._keep_stored("token_source_url")

    def clean_token_source_secret(self) -> str:
        return self._keep_stored("token_source_secret")
