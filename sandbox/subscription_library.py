"""The sandbox's public library of subscription-notification titles (订阅通知公共模板库): a few realistic categories,
titles and keywords, so the admin's "add from the library" page and ``make demo`` have something to pick from.

Shapes follow WeChat's ``getcategory`` / ``getpubtemplatetitles`` / ``getpubtemplatekeywords`` answers
(docs/wechat-api.md §4.3): a title's ``type`` is 2 (one-time) or 3 (long-term, public-service categories only);
a keyword's ``rule`` is its value type.  An enumerated keyword (rule ``enum_string``) carries the values WeChat
approved for it, which ``gettemplate`` lists as ``keywordEnumValueList`` (WeChat's getTemplateList page:
https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-message-management/subscribe-message/getTemplateList.html).
"""

from __future__ import annotations

from typing import Any

ONE_TIME = 2
LONG_TERM = 3

CATEGORIES: list[dict[str, Any]] = [
    {"id": 616, "name": "公交"},
    {"id": 670, "name": "快递、物流"},
    {"id": 411, "name": "医疗服务"},
    {"id": 304, "name": "教育信息服务"},
]


def _kw(kid: int, name: str, example: str, rule: str, enum: list[str] | None = None) -> dict[str, Any]:
    keyword: dict[str, Any] = {"kid": kid, "name": name, "example": example, "rule": rule}
    if enum is not None:
        keyword["enum"] = enum
    return keyword


TITLES: list[dict[str, Any]] = [
    {
        "tid": 99,
        "title": "付款成功通知",
        "type": ONE_TIME,
        "categoryId": 670,
        "keywords": [
            _kw(1, "付款金额", "¥39.80", "amount"),
            _kw(2, "付款时间", "2026年11月28日 10:00", "time"),
            _kw(3, "商户名称", "蓝鲸书店", "thing"),
            _kw(4, "交易单号", "4200001234202611280001", "character_string"),
        ],
    },
    {
        "tid": 1082,
        "title": "订单发货通知",
        "type": ONE_TIME,
        "categoryId": 670,
        "keywords": [
            _kw(1, "订单编号", "SO20261128001", "character_string"),
            _kw(2, "商品名称", "机械键盘", "thing"),
            _kw(3, "发货时间", "2026年11月28日 10:30", "time"),
            _kw(4, "快递公司", "顺丰速运", "thing"),
            _kw(5, "快递单号", "SF1234567890", "character_string"),
            _kw(6, "订单金额", "¥399.00", "amount"),
            _kw(7, "配送状态", "已发货", "phrase"),
        ],
    },
    {
        "tid": 2304,
        "title": "预约挂号成功通知",
        "type": LONG_TERM,
        "categoryId": 411,
        "keywords": [
            _kw(1, "就诊人", "张三", "name"),
            _kw(2, "就诊科室", "口腔科", "thing"),
            _kw(3, "就诊时间", "2026年12月1日 09:00~10:00", "time"),
            _kw(4, "联系电话", "0755-88886666", "phone_number"),
            _kw(5, "就诊日期", "2026年12月1日", "date"),
            _kw(6, "挂号状态", "已预约", "enum_string", ["已预约", "已取消", "已就诊"]),
        ],
    },
    {
        "tid": 5601,
        "title": "车辆违章提醒",
        "type": LONG_TERM,
        "categoryId": 616,
        "keywords": [
            _kw(1, "车牌号码", "粤A8Z888挂", "car_number"),
            _kw(2, "违章日期", "2026年11月20日 08:15", "date"),
            _kw(3, "违章地点", "深南大道科技园段", "thing"),
            _kw(4, "罚款金额", "¥200", "amount"),
            _kw(5, "扣分", "3", "number"),
        ],
    },
    {
        "tid": 3120,
        "title": "课程开课提醒",
        "type": ONE_TIME,
        "categoryId": 304,
        "keywords": [
            _kw(1, "课程名称", "高等数学", "thing"),
            _kw(2, "上课时间", "2026年12月2日 14:00", "time"),
            _kw(3, "班级代号", "AB", "letter"),
            _kw(4, "授课老师", "李老师", "name"),
            _kw(5, "成绩变化", "↑", "symbol"),
        ],
    },
]
TITLES_BY_TID: dict[int, dict[str, Any]] = {title["tid"]: title for title in TITLES}
CATEGORY_IDS: list[int] = [category["id"] for category in CATEGORIES]
