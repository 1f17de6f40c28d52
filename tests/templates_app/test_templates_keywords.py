"""Keyword parsing, per-type validation, rule descriptions and previews (pure functions, no database)."""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.utils import translation
from hypothesis import given, settings
from hypothesis import strategies as st

from templates_app.keywords import (
    LEGACY_TYPES,
    NON_FIELD_ERRORS,
    TYPE_LABELS,
    TYPE_RULES,
    CardLine,
    Keyword,
    keyword_rules,
    parse_keywords,
    render_card,
    render_content,
    type_label,
    validate_template_data,
)
from templates_app.keywords.characters import BIDI_CONTROLS, NEWLINE_CHARS, ZERO_WIDTH_CHARS, has_control, has_invisible

CATEGORY_CONTENT = (
    "工单类型:{{const3.DATA}}\n工单名称:{{thing1.DATA}}\n单号:{{character_string9.DATA}}\n时间:{{time2.DATA}}"
)
VALID_TYPES = [
    "thing",
    "number",
    "letter",
    "symbol",
    "character_string",
    "time",
    "date",
    "amount",
    "phone_number",
    "car_number",
    "name",
    "phrase",
    "const",
]
LEGACY_CONTENT = "{{first.DATA}}\n商品:{{keyword1.DATA}}\n金额:{{keyword2.DATA}}\n{{remark.DATA}}"


@dataclass
class FakeTemplate:
    title: str
    content: str


# Assertions read the English source strings (the shared ``english`` fixture).
pytestmark = pytest.mark.usefixtures("english")


def one(type_name: str, value):
    """Validate a single value against a category template holding one keyword of ``type_name``."""
    name = f"{type_name}1"
    return validate_template_data([Keyword(name=name, type=type_name)], {name: value})


# --- parsing ------------------------------------------------------------------------------------------------------


def test_parse_category_keywords_in_order_with_types():
    assert parse_keywords(CATEGORY_CONTENT) == [
        Keyword("const3", "const"),
        Keyword("thing1", "thing"),
        Keyword("character_string9", "character_string"),
        Keyword("time2", "time"),
    ]


def test_parse_legacy_keywords_are_recognised_as_legacy():
    keywords = parse_keywords(LEGACY_CONTENT)
    assert [k.name for k in keywords] == ["first", "keyword1", "keyword2", "remark"]
    assert [k.type for k in keywords] == ["first", "keyword", "keyword", "remark"]
    assert all(k.is_legacy for k in keywords)
    assert not Keyword.from_name("thing1").is_legacy


def test_parse_tolerates_spaces_and_drops_duplicates():
    content = "A:{{ thing1.DATA }} B:{{thing1 .DATA}} C:{{  amount2.DATA}}{{thing1.DATA}}"
    assert parse_keywords(content) == [Keyword("thing1", "thing"), Keyword("amount2", "amount")]


def test_parse_ignores_reserved_words_without_data_suffix():
    assert parse_keywords("{{thing1}} {{thing2.VALUE}} {{thing3.DATA}}") == [Keyword("thing3", "thing")]
    assert parse_keywords("") == []


# --- input shapes -------------------------------------------------------------------------------------------------


def test_both_input_shapes_are_normalised_to_wechat_shape():
    result = validate_template_data("{{thing1.DATA}}{{number2.DATA}}", {"thing1": {"value": "会议室"}, "number2": "3"})
    assert result.is_valid
    assert result.data == {"thing1": {"value": "会议室"}, "number2": {"value": "3"}}


def test_numbers_are_coerced_to_strings():
    result = validate_template_data("{{number1.DATA}}{{amount2.DATA}}", {"number1": 42, "amount2": {"value": 9.5}})
    assert result.is_valid, result.errors
    assert result.data == {"number1": {"value": "42"}, "amount2": {"value": "9.5"}}


@pytest.mark.parametrize("bad", [None, True, ["a"], {"val": "x"}, {"value": None}, {"value": {"value": "x"}}])
def test_non_string_values_are_errors(bad):
    result = validate_template_data("{{thing1.DATA}}", {"thing1": bad})
    assert not result.is_valid
    assert "thing1" in result.errors
    assert "thing1" not in result.data


def test_data_must_be_a_mapping():
    result = validate_template_data("{{thing1.DATA}}", ["thing1", "x"])
    assert result.errors == {NON_FIELD_ERRORS: ["The data must be an object mapping each keyword to its value."]}


def test_missing_unknown_and_empty_are_readable_errors():
    result = validate_template_data(CATEGORY_CONTENT, {"thing1": "  ", "time2": "15:01", "colour": "red"})
    assert result.errors == {
        "colour": ["“colour” is not a keyword of this template."],
        "const3": ["This keyword is missing."],
        "thing1": ["This value is empty."],
        "character_string9": ["This keyword is missing."],
    }


def test_color_is_accepted_with_a_warning_and_dropped():
    result = validate_template_data("{{thing1.DATA}}", {"thing1": {"value": "会议室", "color": "#173177"}})
    assert result.is_valid
    assert result.data == {"thing1": {"value": "会议室"}}
    assert result.warnings == {"thing1": ["WeChat no longer shows custom colours (since 2023-05-04)."]}


def test_accepts_stored_keyword_dicts_and_template_objects():
    stored = [{"name": "thing1", "type": "thing"}]
    assert validate_template_data(stored, {"thing1": "x" * 21}).errors == {
        "thing1": ["At most 20 characters (this has 21)."]
    }
    template = FakeTemplate(title="t", content="{{phrase1.DATA}}")
    assert validate_template_data(template, {"phrase1": "配送中"}).is_valid


def test_messages_are_plain_strings_ready_for_json():
    result = validate_template_data("{{thing1.DATA}}{{phrase2.DATA}}", {"phrase2": "abc", "x": 1})
    assert json.loads(json.dumps(result.errors)) == result.errors
    assert set(result.errors) == {"thing1", "phrase2", "x"}


@settings(max_examples=200, deadline=None)
@given(type_name=st.sampled_from([*VALID_TYPES, "short_thing", "keyword"]), value=st.text(max_size=40))
def test_any_text_gets_a_verdict_and_valid_values_respect_max_length(type_name, value):
    name = f"{type_name}1"
    result = validate_template_data([Keyword(name=name, type=type_name)], {name: value})
    rule = keyword_rules(f"{{{{{name}.DATA}}}}")[0]
    if result.is_valid:
        assert len(value) <= rule["max_length"]
        assert not has_control(value)
        assert not has_invisible(value)
    if not result.is_valid:
        assert all(isinstance(message, str) and message for message in result.errors[name])


# --- category-wide rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ["thing", "const", "name", "character_string", "short_thing"])
def test_newlines_are_errors_in_category_templates(type_name):
    result = one(type_name, "ab\ncd")
    assert result.errors == {
        f"{type_name}1": ["Line breaks are not allowed: WeChat drops them from template messages."]
    }


@pytest.mark.parametrize("value", ["好的😀", "✅完成", "❤️", "会议👨‍👩‍👧"])
def test_emoji_are_errors_in_category_templates(value):
    result = one("thing", value)
    assert result.errors == {"thing1": ["Emoji are not allowed: WeChat drops them from template messages."]}


# --- per type -----------------------------------------------------------------------------------------------------

VALID = {
    "thing": ["会议室A", "x" * 20, "北京市海淀区中关村大街1号", "Room 3-B"],
    "number": ["0", "12.50", "9" * 32, "1234567890"],
    "letter": ["abc", "A" * 32],
    "symbol": ["-", "#/+", "※…。", "!!!!!"],
    "character_string": ["ORDER-2024-0001", "https://ex.com/a?b=1", "a" * 32],
    "time": ["15:01", "9:05", "2019年10月1日 15:01", "2019-10-01 15:01:59", "15:00~16:00", "2019年10月1日 15:01~16:00"],
    "date": ["2019年10月1日", "2019-10-01", "2019/10/01 15:01", "2019年10月1日~2019年10月3日", "2019.10.1"],
    "amount": ["¥12.50", "￥100", "12.50元", "$9", "8元", "¥1234567890", "¥12.5元", "12"],
    "phone_number": ["+86-0766-66888866", "13800138000", "(010)12345678"],
    "car_number": ["粤A8Z888挂", "京A12345", "AB1234"],
    "name": ["张三", "欧阳娜娜娜娜娜娜娜娜", "John Smith", "O'Brien-Lee", "张三Tom"],
    "phrase": ["配送中", "已完成", "审核未通过"],
    "const": ["已通过", "c" * 20],
    "short_thing": ["任意内容", "x" * 20],
}

INVALID = {
    "thing": ["x" * 21, "北" * 21],
    "number": ["12a", "1.2.3", "-5", "1,000", "9" * 33, "十二"],
    "letter": ["abc1", "中文", "a b", "a" * 33],
    "symbol": ["abc", "-1", "!!!!!!", "- -", "中"],
    "character_string": ["订单123", "a b", "a" * 33],
    "time": ["3pm", "25:00", "15:60", "2019年10月1日", "明天 15:00", "15:00~later", "2019年13月1日 15:00"],
    "date": ["15:01", "2019年10月32日", "yesterday", "2019-1", "2019年10月1日~下周"],
    "amount": ["¥", "¥¥12", "12.50美元", "-¥5", "¥12345678901", "元12", "1,000元"],
    "phone_number": ["138 0013 8000", "tel:138", "1" * 18, "电话13800138000"],
    "car_number": ["粤A8Z8888挂", "粤A-12345", "粤中12345", "ab cd"],
    "name": ["张三1", "张" * 11, "a" * 21, "张三三三三三三三三三Tom"],
    "phrase": ["配送中。", "abc", "配送中配送中"],
    "const": ["c" * 21],
    "short_thing": ["x" * 21],
}


@pytest.mark.parametrize(("type_name", "value"), [(t, v) for t, values in VALID.items() for v in values])
def test_valid_values_per_type(type_name, value):
    result = one(type_name, value)
    assert result.is_valid, (type_name, value, result.errors)
    assert result.data == {f"{type_name}1": {"value": value}}


@pytest.mark.parametrize(("type_name", "value"), [(t, v) for t, values in INVALID.items() for v in values])
def test_invalid_values_per_type(type_name, value):
    result = one(type_name, value)
    assert not result.is_valid, (type_name, value)
    messages = result.errors[f"{type_name}1"]
    assert messages
    assert all(isinstance(m, str) and m.endswith(".") for m in messages)


def test_length_messages_give_limit_and_count():
    assert one("phrase", "配送中配送中").errors == {"phrase1": ["At most 5 characters (this has 6)."]}
    assert one("number", "9" * 33).errors == {"number1": ["At most 32 digits (this has 33)."]}
    assert one("amount", "¥12345678901").errors == {"amount1": ["At most 10 digits (this has 11)."]}
    assert one("name", "张" * 11).errors == {
        "name1": ["A name containing Chinese takes at most 10 characters (this has 11)."]
    }


def test_chinese_counts_one_character_each():
    assert one("thing", "北" * 20).is_valid
    assert one("thing", "北" * 21).errors == {"thing1": ["At most 20 characters (this has 21)."]}


def test_empty_const_is_allowed_with_a_warning():
    result = one("const", "")
    assert result.is_valid
    assert result.warnings == {"const1": ["An empty value is shown as blank."]}


# --- legacy templates ---------------------------------------------------------------------------------------------


def test_legacy_templates_warn_instead_of_erroring():
    data = {
        "first": "您好",
        "keyword1": "巧克力\n大礼包",
        "keyword2": "这是一个特别特别特别特别特别特别特别长的金额说明",
        "remark": "谢谢😀",
    }
    result = validate_template_data(LEGACY_CONTENT, data)
    assert result.is_valid
    assert result.warnings == {
        "first": ["WeChat no longer shows “first” (since 2023-05-04)."],
        "keyword1": ["WeChat removes line breaks from this field."],
        "keyword2": ["WeChat shows only the first 20 characters of this field (this has 24)."],
        "remark": ["WeChat no longer shows “remark” (since 2023-05-04)."],
    }
    assert result.data["keyword1"] == {"value": "巧克力\n大礼包"}


def test_legacy_first_and_remark_are_optional_but_body_is_required():
    result = validate_template_data(LEGACY_CONTENT, {"keyword1": "巧克力"})
    assert result.errors == {"keyword2": ["This keyword is missing."]}
    result = validate_template_data(LEGACY_CONTENT, {"keyword1": "巧克力", "keyword2": "", "remark": ""})
    assert result.errors == {"keyword2": ["This value is empty."]}


def test_legacy_emoji_is_a_warning():
    result = validate_template_data("{{keyword1.DATA}}", {"keyword1": "好😀"})
    assert result.is_valid
    assert result.warnings == {"keyword1": ["WeChat removes emoji from this field."]}


def test_free_named_keywords_of_a_legacy_template_follow_legacy_rules():
    content = "{{result.DATA}}\n领奖金额:{{withdrawMoney.DATA}}\n{{remark.DATA}}"
    result = validate_template_data(content, {"result": "您已提交领奖申请", "withdrawMoney": "x" * 25})
    assert result.is_valid
    assert "withdrawMoney" in result.warnings


# --- caps and refused characters (docs/keywords.md) --------------------------------------------------------------

CAPS = {
    "thing": 20,
    "number": 33,
    "letter": 32,
    "symbol": 5,
    "character_string": 32,
    "time": 50,
    "date": 50,
    "amount": 13,
    "phone_number": 17,
    "car_number": 8,
    "name": 20,
    "phrase": 5,
    "const": 20,
    "enum": 20,
    "enum_string": 20,
    "short_thing": 20,
}
LEGACY_CAP = 200
CONTROL = "Control characters are not allowed."
INVISIBLE = (
    "Invisible characters are not allowed (bidirectional controls such as U+202E, zero-width spaces or joiners, "
    "byte order marks): they make the text read differently from what it is."
)
# Cc, the control characters, other than the line breaks (which have their own error, or warning on legacy fields).
CONTROLS = [chr(code) for code in [*range(0x20), *range(0x7F, 0xA0)] if chr(code) not in NEWLINE_CHARS]
FREE_TEXT_TYPES = ["thing", "name", "phrase", "const", "short_thing"]


def test_every_type_has_a_cap_and_the_rules_serve_it():
    rules = keyword_rules("".join(f"{{{{{type_name}1.DATA}}}}" for type_name in CAPS))
    assert {rule["type"]: rule["max_length"] for rule in rules} == CAPS
    legacy = keyword_rules(LEGACY_CONTENT)
    assert {rule["name"]: rule["max_length"] for rule in legacy} == dict.fromkeys(
        ["first", "keyword1", "keyword2", "remark"], LEGACY_CAP
    )


def test_the_documented_caps_are_the_enforced_ones():
    """docs/keywords.md is where callers read the caps: its table must say what the code does."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "keywords.md").read_text(encoding="utf-8")
    documented = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| (\d+) \|", text, flags=re.MULTILINE))
    assert {name: int(cap) for name, cap in documented.items()} == {
        **CAPS,
        "first": LEGACY_CAP,
        "keyword": LEGACY_CAP,
        "remark": LEGACY_CAP,
    }


def test_time_and_date_have_a_cap_even_when_the_pattern_fits():
    moment = "2019年10月01日 15:01:00"
    assert one("time", f"{moment} ~ {moment}").is_valid
    assert one("date", f"{moment} ~ {moment}").is_valid
    spaced = f"{moment}{' ' * 10}~{' ' * 10}{moment}"
    assert one("time", spaced).errors == {"time1": ["At most 50 characters (this has 61)."]}
    assert one("date", "15:00~" * 1000).errors == {"date1": ["At most 50 characters (this has 6000)."]}


def test_legacy_values_are_capped_at_200_characters():
    at_cap = validate_template_data(LEGACY_CONTENT, {"keyword1": "元" * LEGACY_CAP, "keyword2": "1"})
    assert at_cap.is_valid
    assert at_cap.warnings["keyword1"] == ["WeChat shows only the first 20 characters of this field (this has 200)."]

    for name in ("keyword1", "first", "remark"):
        result = validate_template_data(LEGACY_CONTENT, {"keyword1": "a", "keyword2": "1", name: "x" * 1_000_000})
        assert result.errors == {name: ["At most 200 characters (this has 1000000)."]}, name


def test_blank_values_are_capped_too():
    result = validate_template_data(LEGACY_CONTENT, {"keyword1": "a", "keyword2": "1", "remark": " " * 201})
    assert result.errors == {"remark": ["At most 200 characters (this has 201)."]}
    assert one("thing", " " * 21).errors == {"thing1": ["At most 20 characters (this has 21)."]}


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_control_characters_are_errors_in_every_type_and_legacy_field(char):
    for type_name in [*VALID_TYPES, "short_thing"]:
        assert one(type_name, f"1{char}2").errors == {f"{type_name}1": [CONTROL]}, type_name
    for name in ("first", "keyword1", "remark"):
        data = {"keyword1": "巧克力", "keyword2": "39.80元", name: f"a{char}"}
        assert validate_template_data(LEGACY_CONTENT, data).errors == {name: [CONTROL]}, name


def test_a_value_of_control_characters_only_is_not_taken_for_blank():
    """ "\x1f" and "\t" are whitespace to str.strip(); an optional legacy field would have stored them."""
    for value in ("\x1f", "\t", "\x00"):
        result = validate_template_data(LEGACY_CONTENT, {"keyword1": "a", "keyword2": "1", "remark": value})
        assert result.errors == {"remark": [CONTROL]}
        assert one("const", value).errors == {"const1": [CONTROL]}


INVISIBLES = sorted(BIDI_CONTROLS | ZERO_WIDTH_CHARS)


@pytest.mark.parametrize("char", INVISIBLES, ids=[f"U+{ord(c):04X}" for c in INVISIBLES])
def test_bidi_controls_and_zero_width_characters_are_errors_in_free_text(char):
    for type_name in FREE_TEXT_TYPES:
        assert one(type_name, f"张{char}三").errors == {f"{type_name}1": [INVISIBLE]}, type_name
    for name in ("first", "keyword1", "remark"):
        data = {"keyword1": "巧克力", "keyword2": "39.80元", name: f"39.80{char}元"}
        assert validate_template_data(LEGACY_CONTENT, data).errors == {name: [INVISIBLE]}, name


@pytest.mark.parametrize("char", INVISIBLES, ids=[f"U+{ord(c):04X}" for c in INVISIBLES])
def test_the_other_types_refuse_invisible_characters_with_the_same_message(char):
    samples = {
        "number": "12",
        "letter": "ab",
        "symbol": "--",
        "character_string": "SO1",
        "time": "15:01",
        "date": "2019-10-01",
        "amount": "¥12",
        "phone_number": "138",
        "car_number": "京A12345",
    }
    for type_name, sample in samples.items():
        assert one(type_name, sample[:1] + char + sample[1:]).errors == {f"{type_name}1": [INVISIBLE]}, type_name


def test_a_zero_width_joiner_inside_an_emoji_is_part_of_the_emoji():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    legacy = validate_template_data("{{keyword1.DATA}}", {"keyword1": f"家庭{family}"})
    assert legacy.is_valid and legacy.warnings == {"keyword1": ["WeChat removes emoji from this field."]}
    assert one("thing", f"家庭{family}").errors == {
        "thing1": ["Emoji are not allowed: WeChat drops them from template messages."]
    }
    lone = validate_template_data("{{keyword1.DATA}}", {"keyword1": "家\u200d庭"})
    assert lone.errors == {"keyword1": [INVISIBLE]}


def test_ordinary_text_is_untouched_by_the_character_checks():
    assert one("thing", "北京市 (海淀区) 中关村-1号").is_valid
    assert one("name", "O'Brien-Lee").is_valid
    legacy = validate_template_data(LEGACY_CONTENT, {"keyword1": "巧克力\n大礼包", "keyword2": "39.80元"})
    assert legacy.is_valid and legacy.warnings == {"keyword1": ["WeChat removes line breaks from this field."]}


# --- keyword_rules ------------------------------------------------------------------------------------------------


def test_keyword_rules_describe_each_keyword_and_are_json_serialisable():
    rules = keyword_rules(FakeTemplate(title="工单", content=CATEGORY_CONTENT))
    json.dumps(rules, ensure_ascii=False)
    assert [(r["name"], r["type"], r["label"], r["max_length"]) for r in rules] == [
        ("const3", "const", "工单类型", 20),
        ("thing1", "thing", "工单名称", 20),
        ("character_string9", "character_string", "单号", 32),
        ("time2", "time", "时间", 50),
    ]
    assert all(r["help"] and r["required"] and not r["legacy"] for r in rules)
    assert rules[2]["pattern"] == r"[\x21-\x7e]+"
    assert [r["type_label"] for r in rules] == ["constant", "thing", "character string", "time"]


def test_keyword_rules_for_legacy_templates():
    rules = {r["name"]: r for r in keyword_rules(LEGACY_CONTENT)}
    assert rules["first"]["required"] is False
    assert rules["remark"]["required"] is False
    assert rules["keyword1"]["required"] is True
    assert rules["keyword1"]["label"] == "商品"
    assert rules["first"]["label"] == "first"
    assert all(r["legacy"] for r in rules.values())


def test_keyword_rules_label_with_fullwidth_colon_and_several_placeholders_per_line():
    rules = keyword_rules("金额：{{amount1.DATA}} 时间:{{time2.DATA}}")
    assert [(r["name"], r["label"]) for r in rules] == [("amount1", "金额"), ("time2", "时间")]


# --- type labels --------------------------------------------------------------------------------------------------

# WeChat's own Chinese names of its keyword types (docs/keywords.md) and names for the legacy fields.
CHINESE_TYPE_LABELS = {
    "thing": "事物",
    "number": "数字",
    "letter": "字母",
    "symbol": "符号",
    "character_string": "字符串",
    "time": "时间",
    "date": "日期",
    "amount": "金额",
    "phone_number": "电话",
    "car_number": "车牌",
    "name": "姓名",
    "phrase": "汉字",
    "const": "常量",
    "enum": "枚举值",
    "enum_string": "枚举值",
    "first": "首行",
    "keyword": "关键词",
    "remark": "备注",
}


def test_every_type_the_project_knows_has_a_name_in_words():
    assert set(TYPE_LABELS) == set(TYPE_RULES) | LEGACY_TYPES == set(CHINESE_TYPE_LABELS)
    assert type_label("character_string") == "character string"
    assert type_label("car_number") == "licence plate"


def test_type_labels_in_chinese_whatever_other_apps_translate():
    with translation.override("zh-hans"):
        assert {name: type_label(name) for name in CHINESE_TYPE_LABELS} == CHINESE_TYPE_LABELS
        assert keyword_rules("{{thing2.DATA}}")[0]["type_label"] == "事物"


def test_an_undocumented_type_shows_as_itself():
    assert type_label("short_thing") == "short_thing"
    with translation.override("zh-hans"):
        assert keyword_rules("备注:{{short_thing1.DATA}}")[0]["type_label"] == "short_thing"


# --- rendering ----------------------------------------------------------------------------------------------------


def test_render_content_fills_placeholders_and_marks_missing():
    rendered = render_content(CATEGORY_CONTENT, {"thing1": {"value": "打印机故障"}, "const3": "维修"})
    assert rendered == "工单类型:维修\n工单名称:打印机故障\n单号:[character_string9]\n时间:[time2]"


def test_render_content_tolerates_spaces_in_braces():
    assert render_content("A:{{ thing1.DATA }}", {"thing1": "x"}) == "A:x"


def test_render_card_gives_title_and_labelled_lines():
    template = FakeTemplate(title="工单提醒", content=CATEGORY_CONTENT)
    card = render_card(template, {"thing1": "打印机故障", "const3": "维修", "time2": "15:01"})
    assert card.title == "工单提醒"
    assert card.lines == [
        CardLine("工单类型", "维修"),
        CardLine("工单名称", "打印机故障"),
        CardLine("单号", "[character_string9]"),
        CardLine("时间", "15:01"),
    ]


def test_render_card_for_legacy_template_shows_what_wechat_shows():
    template = FakeTemplate(title="购买成功", content=LEGACY_CONTENT)
    card = render_card(template, {"first": "您好", "keyword1": "巧克力\n大礼包", "keyword2": "1" * 25 + "元"})
    assert card.lines == [CardLine("商品", "巧克力大礼包"), CardLine("金额", "1" * 20)]


def test_render_card_keeps_static_lines():
    card = render_card(FakeTemplate(title="t", content="请及时处理\n名称:{{thing1.DATA}}"), {})
    assert card.lines == [CardLine("", "请及时处理"), CardLine("名称", "[thing1]")]


# --- subscription notifications: the same table, every rule at its limit and one past it --------------------------

SUBSCRIPTION_CONTENT = (
    "会议名称:{{thing1.DATA}}\n会议时间:{{time2.DATA}}\n编号:{{character_string3.DATA}}\n状态:{{phrase4.DATA}}\n"
    "费用:{{amount5.DATA}}\n人数:{{number6.DATA}}\n代号:{{letter7.DATA}}\n标记:{{symbol8.DATA}}\n"
    "日期:{{date9.DATA}}\n电话:{{phone_number10.DATA}}\n车牌:{{car_number11.DATA}}\n联系人:{{name12.DATA}}\n"
    "结果:{{enum_string13.DATA}}\n"
)
SUBSCRIPTION_BOUNDARIES = [
    ("thing1", "会" * 20, "会" * 21),
    ("number6", "9" * 32, "9" * 33),
    ("number6", "9" * 31 + ".5", "9" * 32 + ".5"),
    ("letter7", "a" * 32, "a" * 33),
    ("symbol8", "-" * 5, "-" * 6),
    ("character_string3", "A1-" * 10 + "B2", "A1-" * 10 + "B2C"),
    ("amount5", "¥" + "9" * 8 + ".50", "¥" + "9" * 9 + ".50"),
    ("amount5", "9" * 10 + "元", "9" * 11 + "元"),
    ("phone_number10", "+86-0766-66888866", "+86-0766-668888661"),
    ("car_number11", "粤A8Z888挂", "粤A8Z8888挂"),
    ("name12", "欧阳" * 5, "欧阳" * 5 + "娜"),
    ("name12", "a" * 20, "a" * 21),
    ("phrase4", "配送中已达", "配送中已达了"),
    ("time2", "2019年10月1日 15:01~16:00", "2019年10月1日 25:01"),
    ("date9", "2019年10月1日", "2019年13月1日"),
]


def subscription_keywords() -> list[dict]:
    keywords = [keyword.as_dict() for keyword in parse_keywords(SUBSCRIPTION_CONTENT)]
    keywords[-1]["choices"] = ["已通过", "未通过"]
    return keywords


def subscription_data(**overrides) -> dict:
    data = {
        "thing1": "年度大会",
        "time2": "15:00",
        "character_string3": "M-1",
        "phrase4": "已报名",
        "amount5": "¥12.50",
        "number6": "30",
        "letter7": "AB",
        "symbol8": "#",
        "date9": "2026年12月1日",
        "phone_number10": "0755-88886666",
        "car_number11": "粤B12345",
        "name12": "张三",
        "enum_string13": "已通过",
    }
    return {**data, **overrides}


def test_a_subscription_template_parses_every_rule_type():
    types = [keyword.type for keyword in parse_keywords(SUBSCRIPTION_CONTENT)]
    assert types == [
        "thing", "time", "character_string", "phrase", "amount", "number", "letter", "symbol", "date",
        "phone_number", "car_number", "name", "enum_string",
    ]  # fmt: skip
    assert validate_template_data(subscription_keywords(), subscription_data()).is_valid


@pytest.mark.parametrize(("keyword", "at_limit", "past_limit"), SUBSCRIPTION_BOUNDARIES)
def test_each_subscription_rule_takes_its_limit_and_refuses_one_more(keyword, at_limit, past_limit):
    assert validate_template_data(subscription_keywords(), subscription_data(**{keyword: at_limit})).is_valid

    refused = validate_template_data(subscription_keywords(), subscription_data(**{keyword: past_limit}))
    assert list(refused.errors) == [keyword]


def test_an_enumerated_value_must_be_one_of_the_listed_values():
    refused = validate_template_data(subscription_keywords(), subscription_data(enum_string13="待定"))

    assert refused.errors == {"enum_string13": ["Must be one of the values WeChat approved: 已通过, 未通过."]}
    without_list = [keyword for keyword in subscription_keywords() if keyword["name"] != "enum_string13"]
    without_list.append({"name": "enum_string13", "type": "enum_string"})
    assert validate_template_data(without_list, subscription_data(enum_string13="待定")).is_valid
    assert not validate_template_data(without_list, subscription_data(enum_string13="待" * 21)).is_valid


def test_refusal_reasons_name_the_keyword_its_rule_and_the_limit():
    refused = validate_template_data(subscription_keywords(), subscription_data(thing1="会" * 21, phrase4="OK"))

    assert refused.reasons == [
        "thing1 (thing, at most 20 characters): At most 20 characters (this has 21).",
        "phrase4 (phrase, at most 5 characters): Only Chinese characters, e.g. 配送中.",
    ]
    missing = validate_template_data(subscription_keywords(), {})
    assert missing.reasons[0] == "thing1 (thing, at most 20 characters): This keyword is missing."


def test_keyword_rules_name_the_enumerated_type_in_words():
    template = SimpleNamespace(title="会议通知", content=SUBSCRIPTION_CONTENT, keywords=subscription_keywords())
    rules = {rule["name"]: rule for rule in keyword_rules(template)}

    assert rules["enum_string13"]["type_label"] == "enumerated value"
    assert rules["enum_string13"]["max_length"] == 20
    assert rules["thing1"]["label"] == "会议名称"
