"""Admin for webhook endpoints and their delivery log, scoped to the user's accounts like the other admins.

The signing secret is typed into a password input and never rendered back; the delivery log is read-only, with a
replay action that sends the chosen deliveries again (same event id) and starts a worker.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.scoping import AccountScopedRelatedFilter, ScopedAdminMixin
from accounts.selectors import accounts_for_user
from messaging import events
from webhooks.delivery import replay
from webhooks.models import EVENT_TYPE_CHOICES, Delivery, Endpoint
from webhooks.nudge import nudge_workers
from webhooks.transport import url_problem


class EndpointForm(forms.ModelForm):
    url = forms.URLField(label=_("URL"), max_length=1024, assume_scheme="https")
    secret = forms.CharField(
        label=_("signing secret"),
        required=False,
        min_length=16,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("At least 16 characters. Leave empty to keep the current secret."),
    )
    event_types = forms.MultipleChoiceField(
        label=_("event types"), choices=EVENT_TYPE_CHOICES, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = Endpoint
        fields = ["account", "url", "secret", "event_types", "active", "description"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        problem = url_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        return url

    def clean_secret(self) -> str:
        secret = self.cleaned_data["secret"]
        if not secret and not self.instance.pk:
            raise forms.ValidationError(_("Give the secret the receiver checks signatures with."))
        return secret or self.instance.secret

    def clean_event_types(self) -> list[str]:
        chosen = self.cleaned_data["event_types"]
        return [kind for kind in events.KINDS if kind in chosen]


@admin.register(Endpoint)
class EndpointAdmin(ScopedAdminMixin, admin.ModelAdmin):
    form = EndpointForm
    list_display = ["__str__", "account", "owner", "active", "created_at"]
    list_filter = ["active", ("account", AccountScopedRelatedFilter)]
    list_select_related = ["account", "owner"]
    search_fields = ["url", "description"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Endpoint]:
        return super().get_queryset(request).filter(account__in=accounts_for_user(request.user))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "account":
            kwargs["queryset"] = accounts_for_user(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Endpoint, form, change: bool) -> None:
        if not change:
            obj.owner = request.user
        super().save_model(request, obj, form, change)


@admin.register(Delivery)
class DeliveryAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "endpoint",
        "public_event_id",
        "event_type",
        "state",
        "attempts",
        "last_status_code",
        "latency_ms",
        "last_error",
        "created_at",
        "delivered_at",
    ]
    list_filter = ["state", ("endpoint", AccountScopedRelatedFilter)]
    list_select_related = ["endpoint", "event"]
    search_fields = ["subject"]
    actions = ["replay_deliveries"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).filter(endpoint__account__in=accounts_for_user(request.user))

    @admin.display(description=_("event id"))
    def public_event_id(self, obj: Delivery) -> str:
        return obj.public_event_id

    @admin.display(description=_("type"))
    def event_type(self, obj: Delivery) -> str:
        return obj.event.get_kind_display()

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.change_delivery")

    @admin.action(description=_("Send the selected deliveries again"), permissions=["replay"])
    def replay_deliveries(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = replay(Delivery.objects.filter(pk__in=queryset.values("pk")))
        nudge_workers()
        self.message_user(
            request,
            ngettext("%(count)d delivery will be sent again.", "%(count)d deliveries will be sent again.", count)
            % {"count": count},
            messages.SUCCESS,
        )
