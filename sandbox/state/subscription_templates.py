"""A subscription template as the sandbox holds it for an account, made from a library title by ``addtemplate``
(or seeded by an account's spec), and the 47003 check of a send's values against it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from sandbox.state.subscription_values import value_is_valid
from sandbox.subscription_library import TITLES_BY_TID

SUBSCRIPTION_TEMPLATES_MAX = 25
TITLES_PAGE_MAX = 30
KID_LIST_RANGE = (2, 5)
SCENE_DESC_MAX = 15


@dataclass
class SubscriptionTemplate:
    """A library title added to one account: its keywords in the chosen order, each ``{key, name, rule, example}``
    (``key`` as the send's data names it, e.g. ``time2``), and the enumerations of its enumerated keywords."""

    pri_tmpl_id: str
    tid: int
    title: str
    type: int
    scene_desc: str
    keywords: list[dict[str, Any]] = field(default_factory=list)

    @property
    def content(self) -> str:
        return "".join(f"{keyword['name']}:{{{{{keyword['key']}.DATA}}}}\n" for keyword in self.keywords)

    @property
    def example(self) -> str:
        return "".join(f"{keyword['name']}:{keyword['example']}\n" for keyword in self.keywords)

    def as_api(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "priTmplId": self.pri_tmpl_id,
            "title": self.title,
            "content": self.content,
            "example": self.example,
            "type": self.type,
        }
        enums = [
            {"keywordCode": f"{keyword['key']}.DATA", "enumValueList": list(keyword["enum"])}
            for keyword in self.keywords
            if keyword.get("enum")
        ]
        if enums:
            item["keywordEnumValueList"] = enums
        return item

    def data_problem(self, data: Any) -> str | None:
        """WeChat's 47003 detail for ``data``, or None when every keyword has a value its rule takes."""
        if not isinstance(data, dict):
            return "argument invalid! data is not an object"
        for keyword in self.keywords:
            key = keyword["key"]
            item = data.get(key)
            value = item.get("value") if isinstance(item, dict) else None
            text = "" if value is None else str(value)
            if not text.strip():
                return f"argument invalid! data.{key}.value is empty"
            if not value_is_valid(keyword["rule"], text, keyword.get("enum")):
                return f"argument invalid! data.{key}.value invalid"
        return None


def build_subscription_template(
    tid: int, kid_list: list[int], scene_desc: str, pri_tmpl_id: str | None = None
) -> SubscriptionTemplate:
    """The template ``addtemplate`` makes of library title ``tid``; a ValueError names what WeChat would refuse."""
    title = TITLES_BY_TID.get(tid)
    if title is None:
        raise ValueError("tid")
    by_kid = {keyword["kid"]: keyword for keyword in title["keywords"]}
    if not KID_LIST_RANGE[0] <= len(kid_list) <= KID_LIST_RANGE[1] or len(set(kid_list)) != len(kid_list):
        raise ValueError("kidList")
    if not all(kid in by_kid for kid in kid_list):
        raise ValueError("kidList")
    if not scene_desc.strip() or len(scene_desc) > SCENE_DESC_MAX:
        raise ValueError("sceneDesc")
    keywords = [{**by_kid[kid], "key": f"{by_kid[kid]['rule']}{kid}"} for kid in kid_list]
    return SubscriptionTemplate(
        pri_tmpl_id=pri_tmpl_id or secrets.token_urlsafe(32)[:43],
        tid=tid,
        title=title["title"],
        type=title["type"],
        scene_desc=scene_desc,
        keywords=keywords,
    )
