"""Realistic support tickets for one day, hazards included, and the MySQL/SQLite table they live in.

The tickets mix Chinese and English, cover every category of the default Dify app, and carry what
real exports carry: HTML, emoji, control characters, stray whitespace, personal data, re-exported
(duplicate) records, unusable rows and over-long bodies. The same seed always gives the same frame.
"""

from __future__ import annotations

import datetime
import html
import random
import string
import unicodedata
import zoneinfo
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from dify_pipeline.clean.pii import id_check_character, luhn_check_digit
from dify_pipeline.contract import DEFAULT_CATEGORIES
from dify_pipeline.frames import TEXT

CHANNELS = {"email": 0.3, "web": 0.3, "app": 0.3, "phone": 0.1}
PRIORITIES = {"low": 0.2, "normal": 0.6, "high": 0.15, "urgent": 0.05}

# Share of rows carrying each hazard; every hazard appears at least once in a frame of a few hundred rows.
CHINESE_SHARE = 0.6
PII_SHARE = 0.15
DUPLICATE_SHARE = 0.03
NEIGHBOUR_DAY_SHARE = 0.02
BAD_ROW_SHARE = 0.01
OVERLONG_SHARE = 0.002
HTML_SHARE = 0.08
EMOJI_SHARE = 0.08
CONTROL_SHARE = 0.03
WHITESPACE_SHARE = 0.1


@dataclass(frozen=True)
class _Templates:
    """How customers write about one category, in Chinese and in English."""

    zh_subjects: tuple[str, ...]
    zh_bodies: tuple[str, ...]
    en_subjects: tuple[str, ...]
    en_bodies: tuple[str, ...]


_TEMPLATES: dict[str, _Templates] = dict(
    zip(
        DEFAULT_CATEGORIES,
        (
            _Templates(  # 物流问题
                ("快递三天没动了", "物流一直不更新", "包裹显示已签收但没收到", "发货太慢了"),
                (
                    "我的订单{order}，快递已经{days}天了物流信息一直没更新，请帮忙查一下。",
                    "订单{order}显示已签收，但我根本没收到包裹，快递员也没打电话。",
                    "买的{product}说好48小时发货，已经{days}天了还没发货，物流什么时候能到？",
                ),
                ("Where is my delivery?", "Package marked delivered but not received", "Shipping delay"),
                (
                    "I ordered a {product} ({order}) {days} days ago and the delivery tracking hasn't updated since.",
                    "Tracking for order {order} says delivered but nothing arrived at my door.",
                ),
            ),
            _Templates(  # 退款申请
                ("申请退款", "退款什么时候到账", "要求退货退款"),
                (
                    "订单{order}的{product}不想要了，申请退款，还没拆封。",
                    "退款申请提交{days}天了，钱还没退回来，请尽快处理。",
                    "商品和描述不符，要求全额退款{amount}元。",
                ),
                ("Refund request", "Still waiting for my refund"),
                (
                    "I returned the {product} from order {order} {days} days ago and still have no refund.",
                    "Please refund order {order}, I no longer need the {product}.",
                ),
            ),
            _Templates(  # 功能建议
                ("建议增加夜间模式", "功能建议：订单导出", "希望支持多个收货地址"),
                (
                    "建议App增加夜间模式，晚上看太刺眼了。",
                    "希望能把历史订单导出成Excel，方便报销，这个功能很需要。",
                    "建议购物车支持按店铺筛选，现在找东西太麻烦。",
                ),
                ("Feature request: dark mode", "Suggestion for the app"),
                (
                    "It would be great if the app had a dark mode feature.",
                    "Please add a feature to export my order history as CSV.",
                ),
            ),
            _Templates(  # 账户问题
                ("账号登录不了", "收不到验证码", "账号被冻结"),
                (
                    "登录时一直提示密码错误，重置密码也收不到验证码。",
                    "我的账号突然被冻结了，没有任何通知，请帮我解冻。",
                    "换了手机号以后无法登录账户，怎么绑定新号码？",
                ),
                ("Can't log in to my account", "Account locked"),
                (
                    "I can't log in to my account; the password reset email never arrives.",
                    "My account was locked after I changed my password. Please help me unlock it.",
                ),
            ),
            _Templates(  # 支付问题
                ("支付失败但扣款了", "重复扣款", "无法使用微信支付"),
                (
                    "付款的时候提示支付失败，但是银行卡已经扣了{amount}元。",
                    "同一个订单{order}被扣了两次款，请退回多扣的钱。",
                    "微信支付一直转圈，付不了款。",
                ),
                ("Payment failed but I was charged", "Charged twice"),
                (
                    "My payment failed at checkout but my card was charged ${amount}.",
                    "I was charged twice for order {order}. Please refund the duplicate payment.",
                ),
            ),
            _Templates(  # 产品质量
                ("收到的商品有质量问题", "产品破损", "用了两天就坏了"),
                (
                    "收到的{product}外壳有裂痕，质量太差了。",
                    "{product}用了{days}天就坏了，开不了机。",
                    "包装破损，里面的{product}也摔坏了，这质量也太差了吧。",
                ),
                ("Product arrived broken", "Poor quality"),
                (
                    "The {product} arrived broken, the case is cracked.",
                    "My {product} stopped working after {days} days. Very poor quality.",
                ),
            ),
            _Templates(  # 售后维修
                ("申请维修", "保修期内维修", "维修进度查询"),
                (
                    "{product}还在保修期内，充不进电了，怎么申请维修？",
                    "寄回去维修的{product}已经{days}天了，维修进度查不到。",
                ),
                ("Repair request", "Warranty repair status"),
                (
                    "My {product} is still under warranty and needs repair. How do I send it in?",
                    "I sent my {product} for repair {days} days ago, any update on the repair?",
                ),
            ),
            _Templates(  # 订单修改
                ("修改收货地址", "修改订单", "想换个颜色"),
                (
                    "订单{order}还没发货，想修改收货地址到{city}。",
                    "下单时选错了尺码，能帮我修改订单{order}吗？",
                    "订单{order}的{product}想换成黑色，麻烦修改一下订单。",
                ),
                ("Change address on my order", "Need to change my order"),
                (
                    "Please change the shipping address for order {order} to my new address in {city}.",
                    "Can I change the size on order {order} before it ships?",
                ),
            ),
            _Templates(  # 技术故障
                ("App闪退", "页面打不开", "App崩溃了"),
                (
                    "更新到最新版本后App一打开就崩溃，手机是{device}。",
                    "付款页面一直白屏打不开，换了网络也不行，是不是有bug？",
                    "App搜索功能有bug，搜什么都显示空白。",
                ),
                ("App crashes on startup", "Bug on checkout page"),
                (
                    "The app crashes every time I open it after the latest update ({device}).",
                    "There's a bug on the checkout page, the pay button does nothing.",
                ),
            ),
            _Templates(  # 其他
                ("咨询一下", "发票问题", "表扬客服"),
                ("请问你们有线下门店吗？", "想开具增值税发票，怎么操作？", "客服小王服务很好，特此表扬！"),
                ("General question", "Question about invoices"),
                ("Do you ship to Canada?", "How can I get an invoice for my purchase?"),
            ),
        ),
    )
)

_SLOTS = {
    "zh": {
        "product": ("蓝牙耳机", "空气炸锅", "扫地机器人", "电动牙刷", "保温杯", "羽绒服", "行李箱"),
        "city": ("上海市浦东新区", "北京市朝阳区", "广州市天河区", "成都市武侯区"),
        "device": ("华为Mate 60", "iPhone 15", "小米14", "OPPO Find X7"),
    },
    "en": {
        "product": ("wireless earbuds", "air fryer", "robot vacuum", "electric toothbrush", "suitcase"),
        "city": ("Seattle", "Toronto", "London", "Singapore"),
        "device": ("iPhone 15", "Pixel 8", "Galaxy S24"),
    },
}
_CLOSINGS = {
    "zh": ("谢谢！", "请尽快处理。", "急！！", "麻烦了。", ""),
    "en": ("Thanks.", "Please help ASAP.", "Thank you!", "Regards,", ""),
}
_PII_SENTENCES = {
    "zh": {
        "email": "我的邮箱是{value}，",
        "cn_mobile": "联系电话{value}，",
        "id_card": "身份证号{value}，",
        "bank_card": "退款请打到这张卡：{value}，",
        "us_phone": "美国的电话是{value}，",
    },
    "en": {
        "email": "You can email me at {value}.",
        "cn_mobile": "My Chinese mobile is {value}.",
        "id_card": "My ID number is {value}.",
        "bank_card": "Please refund to card {value}.",
        "us_phone": "Call me at {value}.",
    },
}
_EMOJI = ("😡", "🙏", "👍", "📦", "💔", "😭", "🚚", "👨‍👩‍👧")
_RARE_CJK = ("𠮷", "𪚥", "㐂", "𡃁")
_INVISIBLES = ("\u200b", "\x00", "\ufeff", "\x07", "\u202e", "\x1b")
_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _pii_samples(seed: int = 20240615, per_kind: int = 40) -> dict[str, tuple[str, ...]]:
    """A fixed pool of fake personal data, each value written in one realistic format."""
    rng = random.Random(seed)
    names = ("zhang.wei", "li_na", "wangfang", "liu.yang", "chen.jing", "john.smith", "emma.w", "m.garcia")
    domains = ("qq.com", "163.com", "gmail.com", "outlook.com", "example.cn", "mail.example.co.uk")
    emails, mobiles, ids, cards, us_phones = [], [], [], [], []
    for index in range(per_kind):
        emails.append(f"{rng.choice(names)}{index}@{rng.choice(domains)}")
        mobile = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
        mobiles.append(
            rng.choice(
                (mobile, f"+86 {mobile}", f"+86-{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}",
                 f"{mobile[:3]} {mobile[3:7]} {mobile[7:]}", f"0086{mobile}")
            )
        )
        birth = datetime.date(1960, 1, 1) + datetime.timedelta(days=rng.randrange(16000))
        area = rng.choice(("110105", "310104", "440305", "330106", "510107"))
        first_17 = f"{area}{birth:%Y%m%d}{rng.randrange(1000):03d}"
        ids.append(first_17 + id_check_character(first_17))
        payload = rng.choice(("622202", "621700", "622848", "436742")) + "".join(
            str(rng.randrange(10)) for _ in range(rng.choice((9, 12)))
        )
        card = payload + luhn_check_digit(payload)
        cards.append(card if rng.random() < 0.5 else " ".join(card[i : i + 4] for i in range(0, len(card), 4)))
        line = f"555-{rng.randrange(100, 200):04d}"
        us_phones.append(rng.choice((f"+1 415-{line}", f"(212) {line}", f"+1 (646) {line}")))
    return {
        "email": tuple(emails),
        "cn_mobile": tuple(mobiles),
        "id_card": tuple(ids),
        "bank_card": tuple(cards),
        "us_phone": tuple(us_phones),
    }


# The fake personal data the generator plants, by kind; nothing else in the tickets matches these strings.
PII_SAMPLES: dict[str, tuple[str, ...]] = _pii_samples()


def pii_values_in(tickets: pd.DataFrame) -> set[str]:
    """The planted PII values that occur in `tickets` (subject and body), also where the raw text hides
    them behind HTML entities or full-width digits."""
    raw = "\n".join(str(text) for column in ("subject", "body") for text in tickets[column].dropna())
    haystack = raw + "\n" + unicodedata.normalize("NFKC", html.unescape(raw))
    return {value for values in PII_SAMPLES.values() for value in values if value in haystack}


def _ticket_text(rng: random.Random, category: str, language: str) -> tuple[str, str]:
    templates = _TEMPLATES[category]
    if language == "zh":
        subjects, bodies = templates.zh_subjects, templates.zh_bodies
    else:
        subjects, bodies = templates.en_subjects, templates.en_bodies
    slots = {name: rng.choice(values) for name, values in _SLOTS[language].items()}
    slots |= {
        "order": f"{rng.choice(('DD', 'SO'))}{rng.randrange(10**12):012d}",
        "days": rng.randint(2, 15),
        "amount": rng.choice((39, 89.9, 199, 268, 1299)),
    }
    body = " ".join((rng.choice(bodies).format(**slots), rng.choice(_CLOSINGS[language]))).strip()
    return rng.choice(subjects).format(**slots), body


def _plant_pii(rng: random.Random, body: str, language: str, as_html: bool) -> str:
    kind = rng.choice(tuple(PII_SAMPLES))
    value = rng.choice(PII_SAMPLES[kind])
    if kind == "email" and as_html and rng.random() < 0.5:
        value = value.replace("@", "&#64;")  # what some web forms store
    elif kind == "cn_mobile" and language == "zh" and rng.random() < 0.15:
        value = value.translate(_FULL_WIDTH)  # typed with a full-width input method
    sentence = _PII_SENTENCES[language][kind].format(value=value)
    return f"{sentence}{body}" if rng.random() < 0.5 else f"{body} {sentence}"


def _decorate(rng: random.Random, subject: str, body: str, language: str) -> tuple[str, str]:
    """Add the mess real tickets carry: PII, HTML, emoji, invisible characters, stray whitespace."""
    as_html = rng.random() < HTML_SHARE
    if rng.random() < PII_SHARE:
        body = _plant_pii(rng, body, language, as_html)
    if rng.random() < EMOJI_SHARE:
        body = f"{body} {rng.choice(_EMOJI)}"
        if language == "zh" and rng.random() < 0.3:
            body = f"我姓{rng.choice(_RARE_CJK)}。{body}"
    if as_html:
        sentences = body.replace("。", "。<br>").replace(". ", ".<br>")
        body = f"<p>{sentences}</p><p>Q&amp;A&nbsp;&gt;&gt; 客服 &amp; 售后</p>"
        if rng.random() < 0.2:
            body += rng.choice(("<script>track('ticket')</script>", "<style>p { color: red; }</style>"))
    if rng.random() < CONTROL_SHARE:
        body = f"{body}{rng.choice(_INVISIBLES)}\r\n"
        subject = f"{rng.choice(_INVISIBLES)}{subject}"
    if rng.random() < WHITESPACE_SHARE:
        # Only between sentences, so a planted value stays one exact string.
        body = "  " + body.replace("。", "。 \n\n ", 1).replace(". ", ".   ", 1) + "\n\n\t"
        subject = f"{subject}\u3000 " if language == "zh" else f" {subject}  "
    return subject, body


def _overlong_body(rng: random.Random, body: str) -> str:
    """A pasted log far past the 4000-character limit, with a phone number straddling character 4000."""
    lines = []
    while sum(map(len, lines)) < rng.randint(4500, 9000):
        second = rng.randrange(3600)
        lines.append(f"10:{second // 60:02d}:{second % 60:02d} ERROR OrderService timeout after 3000ms\n")
    log = f"{body} 错误日志：" + "".join(lines)
    phone = rng.choice(PII_SAMPLES["cn_mobile"])
    return f"{log[:3995]} {phone} {log[3995:]}"


def _local_times(rng: np.random.Generator, days: list[datetime.date], timezone: str) -> pd.Series:
    """Random wall-clock times within each given local day, as a naive MySQL DATETIME stores them."""
    zone = zoneinfo.ZoneInfo(timezone)

    def midnight(day: datetime.date) -> float:
        return datetime.datetime.combine(day, datetime.time(), zone).timestamp()

    # Drawing instants between local midnights keeps daylight-saving days at their true length.
    starts = np.array([midnight(day) for day in days])
    ends = np.array([midnight(day + datetime.timedelta(days=1)) for day in days])
    micros = (starts * 1e6 + rng.random(len(days)) * (ends - starts) * 1e6).astype(np.int64)
    return pd.Series(pd.to_datetime(micros, unit="us", utc=True).tz_convert(zone).tz_localize(None))


def _share(count: int, share: float) -> int:
    """How many of `count` rows get a hazard; at least one once the frame is big enough to show it."""
    return max(1, round(count * share)) if count >= 100 else round(count * share)


def generate_tickets(
    day: datetime.date, count: int = 3000, seed: int = 7, timezone: str = "Asia/Shanghai", distinct_texts: bool = False
) -> pd.DataFrame:
    """`count` rows of tickets created on `day` (local time in `timezone`), about 2% of them on the
    days either side so that the extract's day window is exercised.

    Columns: id (Int64: nullable, as the bad rows have no id), subject, body, channel, customer_id,
    priority, created_at, updated_at (naive local wall time). About 3% of rows re-export an earlier
    record with a later `updated_at` and edited text; about 1% are unusable; a few bodies exceed
    4000 characters. Rows are in `updated_at` order, as a change-log export returns them.

    The texts come from templates, so many records share one; `distinct_texts` ends each record's body with a
    reference of random letters (`(ref qwhxkzmbta)`), so that no two records send Dify the same inputs, as
    real tickets mostly do not.
    """
    rng = random.Random(seed)
    references = random.Random(f"references {seed}")  # its own stream: the other columns stay as without it
    numbers = np.random.default_rng(seed)
    duplicate_count = _share(count, DUPLICATE_SHARE)
    originals = count - duplicate_count

    ticket_days = [
        day + datetime.timedelta(days=rng.choice((-1, 1))) if rng.random() < NEIGHBOUR_DAY_SHARE else day
        for _ in range(originals)
    ]
    # A range of ids per generated day, so that separately generated days can share a table.
    first_id = day.toordinal() * 1_000_000
    rows = []
    for ticket_id in range(first_id + 1, first_id + originals + 1):
        language = "zh" if rng.random() < CHINESE_SHARE else "en"
        subject, body = _decorate(rng, *_ticket_text(rng, rng.choice(DEFAULT_CATEGORIES), language), language)
        if distinct_texts:
            body = f"{body} (ref {''.join(references.choices(string.ascii_lowercase, k=10))})"
        rows.append(
            {
                "id": ticket_id,
                "subject": subject,
                "body": body,
                "channel": rng.choices(tuple(CHANNELS), weights=tuple(CHANNELS.values()))[0],
                "customer_id": rng.randrange(100_000, 1_000_000),
                "priority": rng.choices(tuple(PRIORITIES), weights=tuple(PRIORITIES.values()))[0],
            }
        )
    tickets = pd.DataFrame(rows)
    tickets["created_at"] = _local_times(numbers, ticket_days, timezone)
    edited = numbers.random(originals) < 0.3
    tickets["updated_at"] = tickets["created_at"] + pd.to_timedelta(
        np.where(edited, numbers.integers(60, 6 * 3600, originals), 0), unit="s"
    )

    # Distinct rows for each hazard, so that each one is visible on its own.
    shuffled = numbers.permutation(originals).tolist()
    bad_share = _share(count, BAD_ROW_SHARE / 4)
    null_id, blank, html_only, null_body = (shuffled[i * bad_share : (i + 1) * bad_share] for i in range(4))
    overlong = shuffled[4 * bad_share : 4 * bad_share + _share(count, OVERLONG_SHARE)]
    duplicate_sources = shuffled[4 * bad_share + len(overlong) :][:duplicate_count]

    tickets["id"] = tickets["id"].astype("Int64")
    tickets.loc[null_id, "id"] = pd.NA
    tickets.loc[blank, ["subject", "body"]] = ["", "  \n\t "]
    tickets.loc[html_only, ["subject", "body"]] = ["<p>&nbsp;</p>", "<div><br/></div> &nbsp; <script>track()</script>"]
    tickets.loc[null_body, ["subject", "body"]] = ["", None]
    tickets.loc[overlong, "body"] = [_overlong_body(rng, body) for body in tickets.loc[overlong, "body"]]

    duplicates = tickets.loc[duplicate_sources].copy()
    duplicates["updated_at"] += pd.to_timedelta(numbers.integers(300, 12 * 3600, len(duplicates)), unit="s")
    duplicates["body"] = [
        f"{body} 补充：已经等了{rng.randint(2, 9)}天了。" if rng.random() < CHINESE_SHARE
        else f"{body} Update: still waiting."
        for body in duplicates["body"]
    ]
    duplicates["priority"] = "high"

    tickets = pd.concat([tickets, duplicates], ignore_index=True)
    tickets = tickets.sort_values("updated_at", kind="stable", ignore_index=True)
    text_columns = {column: TEXT for column in ("subject", "body", "channel", "priority")}
    return tickets.astype({**text_columns, "created_at": "datetime64[us]", "updated_at": "datetime64[us]"})


def tickets_table(metadata: sa.MetaData, table: str = "tickets") -> sa.Table:
    """The source table: an export with no unique key, as the extract finds it."""
    long_text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    return sa.Table(
        table,
        metadata,
        sa.Column("id", sa.BigInteger, nullable=True),
        sa.Column("subject", sa.String(500)),
        sa.Column("body", long_text),
        sa.Column("channel", sa.String(16)),
        sa.Column("customer_id", sa.BigInteger),
        sa.Column("priority", sa.String(16)),
        sa.Column("created_at", timestamp),
        sa.Column("updated_at", timestamp),
        sa.Index(f"ix_{table}_created_at", "created_at"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
        mariadb_charset="utf8mb4",
        mariadb_collate="utf8mb4_unicode_ci",
    )


def create_source_table(engine: sa.Engine, table: str = "tickets") -> None:
    """Drop the table if it exists and create it empty."""
    source = tickets_table(sa.MetaData(), table)
    with engine.begin() as connection:
        source.drop(connection, checkfirst=True)
        source.create(connection)


def _python_values(column: pd.Series) -> list[object]:
    """Values a DB-API driver understands: Python ints, floats, str and datetimes; NaN/NaT/NA as None."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return [None if pd.isna(value) else value.to_pydatetime() for value in column]
    return column.astype(object).where(column.notna(), None).tolist()


def insert_tickets(engine: sa.Engine, table: str, tickets: pd.DataFrame, batch_size: int = 2000) -> int:
    """Insert `tickets` into the existing `table` in batches; returns the number of rows inserted."""
    target = sa.Table(table, sa.MetaData(), autoload_with=engine)
    columns = {name: _python_values(tickets[name]) for name in tickets.columns}
    records = [dict(zip(columns, values)) for values in zip(*columns.values())]
    with engine.begin() as connection:
        for start in range(0, len(records), batch_size):
            connection.execute(sa.insert(target), records[start : start + batch_size])
    return len(records)
