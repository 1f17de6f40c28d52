"""Subscription notifications (订阅通知): the typed values of the template-library APIs and the checks of their
arguments, shared by the client, the admin's "add from the library" page and the template sync.

WeChat's own limits, checked before a call so a person reads which argument is wrong instead of a bare 2000xx
(docs/wechat-api.md §4.3, from WeChat's "订阅通知接口" page
https://developers.weixin.qq.com/doc/offiaccount/Subscription_Messages/api.html as copied in
https://blog.csdn.net/m0_37873390/article/details/117033692): ``addtemplate`` takes 2 to 5 keyword ids in display order
and a scene description of at most 15 characters; ``getpubtemplatetitles`` pages by at most 30.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

KID_LIST_MIN = 2
KID_LIST_MAX = 5
SCENE_DESC_MAX_LENGTH = 15
SUBSCRIPTION_TITLES_PAGE_MAX = 30


class SubscriptionTemplateType(IntEnum):
    """``type`` of a library title and of an added template: WeChat's 2 and 3."""

    ONE_TIME = 2
    LONG_TERM = 3


@dataclass(frozen=True)
class SubscriptionCategory:
    """A service category the account has set (``getcategory``)."""

    id: int
    name: str


@dataclass(frozen=True)
class SubscriptionTitle:
    """A title of the public library (``getpubtemplatetitles``); ``type`` is 2 (one-time) or 3 (long-term)."""

    tid: int
    title: str
    type: int
    category_id: int


@dataclass(frozen=True)
class SubscriptionTitlePage:
    """One page of titles; ``count`` is how many the categories hold in all."""

    count: int
    titles: list[SubscriptionTitle]


@dataclass(frozen=True)
class SubscriptionKeyword:
    """A keyword a library title offers (``getpubtemplatekeywords``); ``rule`` is its value type (thing, time, …)."""

    kid: int
    name: str
    example: str
    rule: str


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_tid(tid: int) -> int:
    """A library title id: a positive whole number."""
    if not _is_whole(tid) or tid <= 0:
        raise ValueError("tid must be a positive whole number")
    return tid


def validate_category_ids(category_ids: Sequence[int]) -> list[int]:
    """At least one category id, each a positive whole number (WeChat's 200018/200019 otherwise)."""
    ids = list(category_ids)
    if not ids:
        raise ValueError("give at least one category id")
    if not all(_is_whole(value) and value > 0 for value in ids):
        raise ValueError("category ids must be positive whole numbers")
    return ids


def validate_kid_list(kid_list: Sequence[int]) -> list[int]:
    """2 to 5 distinct keyword ids, in the order the notification shows them (WeChat's 200020 otherwise)."""
    kids = list(kid_list)
    if not KID_LIST_MIN <= len(kids) <= KID_LIST_MAX:
        raise ValueError(f"kidList takes {KID_LIST_MIN} to {KID_LIST_MAX} keyword ids, got {len(kids)}")
    if not all(_is_whole(kid) and kid > 0 for kid in kids):
        raise ValueError("keyword ids must be positive whole numbers")
    if len(set(kids)) != len(kids):
        raise ValueError("each keyword id may be chosen once")
    return kids


def validate_scene_desc(scene_desc: str) -> str:
    """A non-empty scene description of at most 15 characters (WeChat's 200021 otherwise)."""
    if not isinstance(scene_desc, str) or not scene_desc.strip():
        raise ValueError("sceneDesc must be a non-empty text")
    if len(scene_desc) > SCENE_DESC_MAX_LENGTH:
        raise ValueError(f"sceneDesc takes at most {SCENE_DESC_MAX_LENGTH} characters, got {len(scene_desc)}")
    return scene_desc
