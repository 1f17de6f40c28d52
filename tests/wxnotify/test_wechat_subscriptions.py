"""The arguments of the subscription-template APIs are checked before any call (wxnotify.wechat.subscriptions)."""

import pytest

from wxnotify.wechat.subscriptions import (
    KID_LIST_MAX,
    KID_LIST_MIN,
    SCENE_DESC_MAX_LENGTH,
    validate_category_ids,
    validate_kid_list,
    validate_scene_desc,
    validate_tid,
)


@pytest.mark.parametrize("kids", [[1, 2], [5, 3, 1], [1, 2, 3, 4, 5]])
def test_two_to_five_keyword_ids_pass_in_their_order(kids):
    assert validate_kid_list(tuple(kids)) == kids


@pytest.mark.parametrize(
    ("kids", "fragment"),
    [
        ([1], f"{KID_LIST_MIN} to {KID_LIST_MAX}"),
        ([1, 2, 3, 4, 5, 6], f"{KID_LIST_MIN} to {KID_LIST_MAX}"),
        ([], "got 0"),
        ([1, 1], "once"),
        ([1, "2"], "whole numbers"),
        ([1, True], "whole numbers"),
        ([0, 1], "whole numbers"),
    ],
)
def test_bad_keyword_lists_are_refused_with_the_reason(kids, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_kid_list(kids)


def test_scene_description_takes_15_characters_counting_chinese_as_one():
    assert validate_scene_desc("预" * SCENE_DESC_MAX_LENGTH) == "预" * 15
    with pytest.raises(ValueError, match="at most 15 characters, got 16"):
        validate_scene_desc("预" * 16)
    for blank in ("", "   ", None):
        with pytest.raises(ValueError, match="non-empty"):
            validate_scene_desc(blank)


def test_tid_and_category_ids_are_positive_whole_numbers():
    assert validate_tid(99) == 99
    assert validate_category_ids((616, 617)) == [616, 617]
    for bad in (0, -1, "99", 1.5, True):
        with pytest.raises(ValueError):
            validate_tid(bad)
    with pytest.raises(ValueError, match="at least one"):
        validate_category_ids([])
    with pytest.raises(ValueError, match="positive whole"):
        validate_category_ids([616, "x"])
