"""The scoping walk: every admin page, API route and console page, visited by one account's business staff.

What to visit comes from the project itself (the admin registry and the admin's URL patterns, the API router, the
console's URLconf), so a page added later is walked without editing this module. Which official account an object
belongs to comes from its model: the chain of foreign keys that leads to ``OfficialAccount``. A registered model or
a route this cannot place fails the walk, naming it, instead of being skipped.

Every response is searched for the other account's markers (names, AppID, openids, template titles, secrets...);
a marker the request itself carried (a probe's query string) is not searched for in its answer, which may echo it.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.apps import apps
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from accounts.models import OfficialAccount

NOT_FOUND = {404}
# Requests that would end the walking user's session: never sent.
SIGN_OUT_ROUTES = {"admin:logout", "console:logout"}


def account_lookup(model: type[models.Model]) -> str | None:
    """The ORM lookup from ``model`` to the id of the account its rows belong to ("pk" for accounts), or None.

    The shortest chain of forward foreign keys wins: a message belongs to its ``account``, not to its follower's.
    """
    queue: deque[tuple[type[models.Model], str]] = deque([(model, "")])
    seen = {model}
    while queue:
        current, path = queue.popleft()
        if current is OfficialAccount:
            return path or "pk"
        for related in current._meta.get_fields():
            if related.concrete and (related.many_to_one or related.one_to_one) and related.related_model not in seen:
                seen.add(related.related_model)
                queue.append((related.related_model, f"{path}__{related.name}" if path else related.name))
    return None


def objects_of(model: type[models.Model], account: OfficialAccount) -> list[models.Model]:
    lookup = account_lookup(model)
    assert lookup is not None, f"{model._meta.label} has no foreign key path to an official account"
    return list(model._default_manager.filter(**{lookup: account.pk}).order_by("pk"))


@dataclass
class Walk:
    """A logged-in client that searches every answer for the other account's markers and counts the pages."""

    client: Client
    # marker -> what it is, for the failure message ("account B's AppID").
    markers: Mapping[str, str]
    pages: list[str] = field(default_factory=list)

    def visit(
        self,
        method: str,
        url: str,
        *,
        expect: set[int] | None = None,
        payload: Mapping[str, Any] | None = None,
        as_json: bool = False,
        follow: bool = False,
    ) -> HttpResponse:
        send = getattr(self.client, method)
        if payload is None:
            response = send(url, follow=follow)
        elif as_json:
            response = send(url, json.dumps(payload), content_type="application/json", follow=follow)
        else:
            response = send(url, payload, follow=follow)
        label = f"{method.upper()} {url}" + (f" {json.dumps(payload)}" if payload else "")
        self.pages.append(label)
        assert response.status_code < 500, f"{label} answered {response.status_code}"
        if expect is not None:
            assert response.status_code in expect, f"{label} answered {response.status_code}, expected {expect}"
        shown = response.content.decode("utf-8", "replace") + response.headers.get("Location", "")
        leaked = [
            f"{what} ({marker!r})" for marker, what in self.markers.items() if marker in shown and marker not in label
        ]
        assert not leaked, f"{label} shows {', '.join(leaked)}"
        return response


def _params(pattern: URLPattern) -> set[str]:
    return set(pattern.pattern.regex.groupindex)


# --- Admin ------------------------------------------------------------------------------------------------------


def place_admin_models(global_apps: Mapping[str, str]) -> tuple[list[admin.ModelAdmin], list[admin.ModelAdmin]]:
    """The registered model admins split into those scoped to an account and those of global apps.

    A model of neither kind fails, naming it: the walk would otherwise not know whose pages it shows.
    """
    scoped, global_ = [], []
    unplaced = []
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label in global_apps:
            global_.append(model_admin)
        elif account_lookup(model) is not None:
            scoped.append(model_admin)
        else:
            unplaced.append(model._meta.label)
    assert not unplaced, (
        f"The admin registers {', '.join(unplaced)}, but the scoping walk cannot tell which official account their "
        "rows belong to: give the model a foreign key path to accounts.OfficialAccount, or (only if it holds no "
        "account's data and business staff are refused it) add its app to GLOBAL_ADMIN_APPS."
    )
    return scoped, global_


def _changelist_url(model_admin: admin.ModelAdmin) -> str:
    opts = model_admin.opts
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")


def walk_global_admin(walk: Walk, model_admin: admin.ModelAdmin) -> None:
    """Business staff are refused the pages of models that belong to no account."""
    walk.visit("get", _changelist_url(model_admin), expect={403})


def _filter_urls(changelist: str, response: HttpResponse, other: OfficialAccount) -> Iterator[tuple[str, bool]]:
    """Each list filter's choices, and each related filter set to the other account's objects (expect no rows)."""
    cl = response.context["cl"]
    for spec in cl.filter_specs:
        for choice in spec.choices(cl):
            yield changelist + choice["query_string"], False
        related = getattr(getattr(spec, "field", None), "related_model", None)
        lookup_kwarg = getattr(spec, "lookup_kwarg", None)
        if related is not None and lookup_kwarg and account_lookup(related) is not None:
            for theirs in objects_of(related, other):
                yield f"{changelist}?{urlencode({lookup_kwarg: theirs.pk})}", True


def walk_model_admin(
    walk: Walk, model_admin: admin.ModelAdmin, *, own: OfficialAccount, other: OfficialAccount, search: str
) -> bool:
    """Changelist, filters, search, and every object page; the other account's objects answer 404.

    Returns whether the changelist was shown (the user may lack the view permission: then 403 everywhere).
    """
    model = model_admin.model
    label = model._meta.label
    mine, theirs = objects_of(model, own), objects_of(model, other)
    assert mine and theirs, f"The fixtures give {label} no rows of both accounts; the walk would prove nothing"
    changelist = _changelist_url(model_admin)
    response = walk.visit("get", changelist, expect={200, 403})
    shown = response.status_code == 200
    if shown:
        assert response.context["cl"].result_count == len(mine), f"{changelist} does not list exactly own rows"
        for url, expect_empty in dict.fromkeys(_filter_urls(changelist, response, other)):
            filtered = walk.visit("get", url, follow=True, expect={200})
            if expect_empty:
                assert filtered.context["cl"].result_count == 0, f"{url} lists rows of the other account"
        if model_admin.search_fields:
            found = walk.visit("get", f"{changelist}?{urlencode({'q': search})}", expect={200})
            assert found.context["cl"].result_count == 0, f"{changelist} finds the other account's rows by search"
    for pattern in model_admin.get_urls():
        params = _params(pattern)
        route = str(pattern.pattern)
        if not params:
            if route:
                walk.visit("get", changelist + route, expect={200, 302, 403, 404})
            continue
        assert params == {"object_id"}, f"{label}'s admin URL {route!r} takes {params}: the walk cannot fill them"
        for objects, expect in ((mine, {200, 403} if shown else {403}), (theirs, NOT_FOUND)):
            for obj in objects:
                url = changelist + route.replace("<path:object_id>", quote(str(obj.pk)))
                walk.visit("get", url, follow=True, expect=expect)
    return shown


def walk_autocomplete(walk: Walk, *, search: str) -> int:
    """``/admin/autocomplete/`` for every relation of every model to a registered model, unfiltered and searched.

    Django answers for any such relation (not only ``autocomplete_fields``) from the related model's admin queryset.
    Returns how many answered with results lists (the others are refused: 403, or 404 without search fields).
    """
    url = reverse("admin:autocomplete")
    answered = 0
    for model in apps.get_models():
        for relation in model._meta.get_fields():
            if not (relation.concrete and relation.is_relation) or relation.related_model not in admin.site._registry:
                continue
            query = {
                "app_label": model._meta.app_label,
                "model_name": model._meta.model_name,
                "field_name": relation.name,
            }
            for term in ("", search):
                response = walk.visit("get", f"{url}?{urlencode({**query, 'term': term})}", expect={200, 403, 404})
                answered += response.status_code == 200
    return answered


def walk_admin_site(walk: Walk, *, other: OfficialAccount, probes: list[dict[str, str]]) -> None:
    """The admin's own pages (index, app lists, "view on site", ...) and pages added under ``/admin/`` elsewhere."""
    scoped_models = [model for model in admin.site._registry if account_lookup(model) is not None]
    for pattern in admin.site.get_urls():
        if isinstance(pattern, URLResolver):
            continue  # a model admin's pages: walk_model_admin
        params, name = _params(pattern), f"admin:{pattern.name}"
        if name in SIGN_OUT_ROUTES:
            continue
        if not params:
            _visit_with_probes(walk, reverse(name), probes)
        elif params == {"app_label"}:
            for app_label in sorted({model._meta.app_label for model in admin.site._registry}):
                walk.visit("get", reverse(name, kwargs={"app_label": app_label}), expect={200, 403, 404})
        elif params == {"content_type_id", "object_id"}:
            for model in scoped_models:
                content_type = ContentType.objects.get_for_model(model)
                for obj in objects_of(model, other):
                    kwargs = {"content_type_id": content_type.pk, "object_id": obj.pk}
                    walk.visit("get", reverse(name, kwargs=kwargs), expect=NOT_FOUND)
        else:
            # Django's catch-all (``final_catch_all_view``) is the only other one: it answers unknown admin URLs.
            assert params == {"url"}, f"admin URL {pattern.pattern} takes {params}: the walk cannot fill them"
    for route, name, params in _routes_outside_admin_site():
        assert not params, f"{route} ({name}) takes {params}: the walk cannot fill them"
        _visit_with_probes(walk, "/" + route, probes)


def _routes_outside_admin_site() -> Iterator[tuple[str, str | None, set[str]]]:
    """Pages under ``/admin/`` that the admin site does not own (the operations dashboard)."""

    def flatten(patterns: list, prefix: str) -> Iterator[tuple[str, str | None, set[str]]]:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if entry.namespace != "admin":
                    yield from flatten(entry.url_patterns, prefix + str(entry.pattern))
            else:
                yield prefix + str(entry.pattern), entry.name, _params(entry)

    for route, name, params in flatten(get_resolver().url_patterns, ""):
        if route.startswith("admin/"):
            yield route, name, params


def _visit_with_probes(walk: Walk, url: str, probes: list[dict[str, str]]) -> None:
    response = walk.visit("get", url, follow=True)
    if response.status_code != 405:
        for probe in probes:
            walk.visit("get", f"{url}?{urlencode(probe)}", follow=True)


# --- API --------------------------------------------------------------------------------------------------------


def _resolve(obj: Any, lookup: str) -> Any:
    """The value an ORM lookup ("account__appid", "created_at__gte") reads on ``obj``."""
    value = obj
    for part in lookup.split("__"):
        if not hasattr(value, part):
            break
        value = getattr(value, part)
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _results(response: HttpResponse) -> list[Any]:
    body = response.json()
    return body["results"] if isinstance(body, dict) else body


def walk_api(walk: Walk, router: Any, *, own: OfficialAccount, other: OfficialAccount, namespace: str = "api") -> int:
    """Every route of the router (its URLs under ``namespace``): list (also filtered by the other account's values),
    detail and extra actions.

    Returns the number of list endpoints that answered (with exactly the own account's objects).
    """
    lists = 0
    for prefix, viewset, basename in router.registry:
        queryset = getattr(viewset, "queryset", None)
        assert queryset is not None, f"API route {prefix!r} declares no queryset: the walk cannot tell its model"
        model = queryset.model
        assert account_lookup(model) is not None, (
            f"API route {prefix!r} serves {model._meta.label}, which has no foreign key path to an official account"
        )
        mine, theirs = objects_of(model, own), objects_of(model, other)
        assert mine and theirs, f"The fixtures give {model._meta.label} no rows of both accounts"
        list_url = reverse(f"{namespace}:{basename}-list")
        response = walk.visit("get", list_url, expect={200, 403})
        if response.status_code == 200:
            lists += 1
            assert len(_results(response)) == len(mine), f"{list_url} does not list exactly own rows"
            for param, lookup in getattr(getattr(viewset, "filter_class", None), "lookups", {}).items():
                value = _resolve(theirs[0], lookup)
                if value is not None:
                    walk.visit("get", f"{list_url}?{urlencode({param: value})}", expect={200, 400})
        for obj in mine:
            walk.visit("get", reverse(f"{namespace}:{basename}-detail", kwargs={"pk": obj.pk}), expect={200, 403})
        for obj in theirs:
            walk.visit("get", reverse(f"{namespace}:{basename}-detail", kwargs={"pk": obj.pk}), expect={403, 404})
        for action in viewset.get_extra_actions():
            for method in action.mapping:
                if action.detail:
                    for obj in theirs:
                        url = reverse(f"{namespace}:{basename}-{action.url_name}", kwargs={"pk": obj.pk})
                        if method == "get":
                            walk.visit("get", url, expect={403, 404})
                        else:
                            walk.visit(method, url, payload={}, as_json=True, expect={403, 404})
                elif method == "get":
                    walk.visit("get", reverse(f"{namespace}:{basename}-{action.url_name}"), expect={200, 403})
    return lists


# --- Console ----------------------------------------------------------------------------------------------------

_SEGMENT_BEFORE_PARAM = re.compile(r"([\w-]+)/<[^>]+>")


def _model_named_by(route: str, candidates: list[type[models.Model]]) -> type[models.Model] | None:
    """``campaigns/<int:pk>/...`` names a campaign: the path segment before the parameter, singular."""
    match = _SEGMENT_BEFORE_PARAM.search(route)
    if match is None:
        return None
    segment = match.group(1).replace("-", "")
    for model in candidates:
        if segment in {model._meta.model_name, f"{model._meta.model_name}s"}:
            return model
    return None


def walk_console(
    walk: Walk,
    urlconf: Any,
    *,
    own: OfficialAccount,
    other: OfficialAccount,
    get_probes: list[dict[str, str]],
    post_probes: list[dict[str, Any]],
) -> None:
    """Every console page: plain, with probes naming either account, and each object page of the other's → 404.

    POSTs go to the own account's objects never (they would cancel or retry campaigns), to the other's always.
    """
    namespace = urlconf.app_name
    candidates = [model for model in apps.get_models() if account_lookup(model) is not None]
    for pattern in urlconf.urlpatterns:
        name = f"{namespace}:{pattern.name}"
        params = _params(pattern)
        if not params:
            if name in SIGN_OUT_ROUTES:
                continue
            url = reverse(name)
            _visit_with_probes(walk, url, get_probes)
            for probe in post_probes:
                walk.visit("post", url, payload=probe, as_json=True)
                walk.visit("post", url, payload={k: v for k, v in probe.items() if isinstance(v, str)})
            continue
        model = _model_named_by(str(pattern.pattern), candidates)
        assert model is not None and len(params) == 1, (
            f"console URL {name} ({pattern.pattern}) takes {params}, and the walk cannot tell which model they name"
        )
        (param,) = params
        for obj in objects_of(model, own):
            walk.visit("get", reverse(name, kwargs={param: obj.pk}), expect={200, 405})
        for obj in objects_of(model, other):
            url = reverse(name, kwargs={param: obj.pk})
            answers = {walk.visit(method, url).status_code for method in ("get", "post")}
            assert answers <= {404, 405} and 404 in answers, f"{url} answered {answers} for the other account's object"
