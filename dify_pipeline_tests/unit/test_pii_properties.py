"""Generated personal data, in the formats, groupings, scripts and surroundings people really write, never
survives the cleaning `clean_tickets` applies; order numbers, times, amounts and versions come through intact.

Each kind runs EXAMPLES examples, derandomized so that a run is reproducible. To explore further, set
PII_PROPERTY_EXAMPLES (e.g. 20000) and PII_PROPERTY_RANDOM=1 (a new random seed each run).
"""

from __future__ import annotations

import datetime
import os
import re
import unicodedata

import phonenumbers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dify_pipeline.clean.cleaning import clean_texts
from dify_pipeline.clean.pii import PiiMasker, id_check_character, is_valid_resident_id, luhn_check_digit

EXAMPLES = int(os.environ.get("PII_PROPERTY_EXAMPLES", "2000"))
MASKER = PiiMasker()
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize="PII_PROPERTY_RANDOM" not in os.environ,
                    database=None, suppress_health_check=[HealthCheck.too_slow])

# -- surroundings: Chinese and English text, punctuation, emoji, HTML, whitespace; no digits of their own ------

_FILLER_PIECES = ["请", "谢谢", "我的", "退款", "联系", "please", "refund", "Thanks", "my card", "call", "的", "。",
                  "，", "！", "：", ":", ";", " ", "  ", "\n", "“", "”", "😡", "📦", "<p>", "</p>", "<br>", "<div>",
                  "</div>",
                  "&nbsp;", "&amp;", "\u200b", "\u3000", "Q&A"]
# Up to four pieces of Chinese or English text, punctuation, emoji, HTML and whitespace, and any CJK character.
_FILLER = st.builds(
    lambda pieces, rare: "".join(pieces) + rare,
    st.lists(st.sampled_from(_FILLER_PIECES), max_size=4),
    st.one_of(st.just(""), st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)),
)
# What stands right next to a value: never a Latin letter or a digit (a number glued to letters is a waybill).
_BOUNDARY = st.sampled_from([" ", "：", ":", "，", "。", "(", "（", "\n", "<br>", "<p>", "我", "号", "是", "\t", "“",
                             "😡"])
_INLINE_TAG = st.sampled_from(["", "", "<b>", "<span>", "<strong>", "<font color=red>"])
# Distractors that must come through: order numbers glued to their letters.
_ORDER_NUMBER = st.builds(lambda prefix, digits: prefix + digits, st.sampled_from(["DD", "SO", "订单号DD"]),
                          st.text("0123456789", min_size=12, max_size=12))


@st.composite
def _in_text(draw, value: str) -> tuple[str, str]:
    """`value` inside a ticket, and the digits the ticket's own text holds (its order numbers)."""
    before, after = draw(_FILLER), draw(_FILLER)
    tag = draw(_INLINE_TAG)
    closing = f"</{tag[1:].split()[0].rstrip('>')}>" if tag else ""
    orders = draw(st.lists(_ORDER_NUMBER, max_size=2))
    head = f"{orders[0]} " if orders else ""
    tail = f" {orders[1]}" if len(orders) > 1 else ""
    text = f"{head}{before}{draw(_BOUNDARY)}{tag}{value}{closing}{draw(_BOUNDARY)}{after}{tail}"
    return text, "".join(re.sub(r"\D", "", order) for order in orders)


def _digits_left(text: str) -> str:
    return "".join(re.findall(r"\d", unicodedata.normalize("NFKC", text)))


def _cleaned(text: str) -> tuple[str, tuple[str, ...]]:
    [result] = clean_texts([text], MASKER)
    return result.text, result.pii_kinds


# -- how people write numbers ------------------------------------------------------------------------------

_DIGIT_SCRIPTS = {
    "ascii": "0123456789",
    "full_width": "０１２３４５６７８９",
    "arabic_indic": "٠١٢٣٤٥٦٧٨٩",
    "math_bold": "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗",
}


_SEPARATORS = [" ", "-", ".", "\u200b", "\u00a0", "\u3000", " - ", "  ", "\u2060", "\ufeff", "‐", "–", "—", "．", "－",
               "\u00ad", "&nbsp;", "&#8203;", "<br>", "</span><span>", "·"]


@st.composite
def _written(draw, digits: str) -> str:
    """`digits` cut into groups of any sizes, joined by one separator or a mix, in a digit script or a mix.

    The grouping comes from one drawn seed rather than a draw per group and digit: ten times cheaper to generate,
    at the price of shrinking (a failure still shows the text)."""
    rng = draw(st.randoms(use_true_random=True))
    cuts, position = [], 0
    while position < len(digits):
        size = rng.randint(1, 8)
        cuts.append(digits[position : position + size])
        position += size
    one = rng.choice(_SEPARATORS)
    separators = [one if rng.random() < 0.5 else rng.choice(_SEPARATORS) for _ in cuts[1:]]
    if separators and rng.random() < 0.25:
        separators[rng.randrange(len(separators))] = ""  # one group boundary without separator
    script = rng.choice(["ascii", "ascii", "full_width", "mixed", "arabic_indic", "math_bold"])

    def render(digit: str) -> str:
        return _DIGIT_SCRIPTS[rng.choice(sorted(_DIGIT_SCRIPTS)) if script == "mixed" else script][int(digit)]

    text = "".join(render(d) for d in cuts[0])
    for separator, cut in zip(separators, cuts[1:]):
        text += separator + "".join(render(d) for d in cut)
    return text


_CARD_PREFIXES = ["4", "51", "55", "2221", "2720", "34", "37", "62", "6222", "622848", "9558", "35", "6011", "65", "81"]


@st.composite
def bank_cards(draw) -> str:
    prefix = draw(st.sampled_from(_CARD_PREFIXES))
    length = draw(st.integers(max(13, len(prefix) + 2), 19))
    payload = prefix + draw(st.text("0123456789", min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1))
    return payload + luhn_check_digit(payload)


_PROVINCES = "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82"


@st.composite
def resident_ids(draw) -> tuple[str, str]:
    """(digits, check character): 17 digits and an X or digit, or a 15-digit legacy number and ""."""
    area = draw(st.sampled_from(_PROVINCES.split())) + draw(st.text("0123456789", min_size=4, max_size=4))
    sequence = draw(st.text("0123456789", min_size=3, max_size=3))
    if draw(st.integers(0, 4)) == 0:
        birth = draw(st.dates(datetime.date(1900, 1, 1), datetime.date(1999, 12, 31)))
        return f"{area}{birth:%y%m%d}{sequence}", ""
    birth = draw(st.dates(datetime.date(1900, 1, 1), datetime.date.today()))
    first_17 = f"{area}{birth:%Y%m%d}{sequence}"
    return first_17[:17], id_check_character(first_17)


@st.composite
def chinese_mobiles(draw) -> str:
    number = "1" + draw(st.sampled_from("3456789")) + draw(st.text("0123456789", min_size=9, max_size=9))
    prefix = draw(st.sampled_from(["", "", "+86", "+86 ", "86", "0086", "+86-", "(+86) ", "＋86 "]))
    return prefix + draw(_written(number))


@st.composite
def chinese_landlines(draw) -> str:
    area = draw(st.sampled_from(["10", "20", "21", "22", "23", "24", "25", "27", "28", "29", "311", "371", "512", "571",
                                 "591", "755", "769", "871", "898"]))
    local = draw(st.text("0123456789", min_size=8 if len(area) == 2 else 7, max_size=8))
    local = draw(st.sampled_from("2345678")) + local[1:]
    style = draw(st.sampled_from(["trunk", "parentheses", "plus", "country"]))
    if style == "parentheses":
        return f"(0{area}) " + draw(_written(local))
    if style == "plus":
        return "+86 " + draw(_written(area + local))
    if style == "country":
        return "86-" + draw(_written(area + local))
    return draw(_written("0" + area + local))


_REGIONS = ["GB", "DE", "FR", "JP", "KR", "IN", "AU", "BR", "RU", "SG", "HK", "TW", "CA", "US", "IT", "ES", "NL", "MX"]


@st.composite
def international_phones(draw) -> str:
    region = draw(st.sampled_from(_REGIONS))
    kind = draw(st.sampled_from([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]))
    example = phonenumbers.example_number_for_type(region, kind)
    assume(example is not None)
    national = str(example.national_number)
    national = national[:-4] + draw(st.text("0123456789", min_size=4, max_size=4))
    number = phonenumbers.parse(f"+{example.country_code}{national}")
    assume(phonenumbers.is_valid_number(number))
    lead = draw(st.sampled_from(["+", "+", "00", "＋"]))
    if draw(st.booleans()):
        separator = draw(st.sampled_from([s for s in _SEPARATORS if "<" not in s]))
        return lead + str(example.country_code) + separator + draw(_written(national))
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return formatted.replace("+", lead, 1)


_AREA_CODES = ["212", "415", "646", "312", "617", "206", "713", "305", "404", "702", "818", "917"]


@st.composite
def us_phones(draw) -> str:
    area, exchange = draw(st.sampled_from(_AREA_CODES)), draw(st.integers(200, 999))
    line = draw(st.text("0123456789", min_size=4, max_size=4))
    assume(phonenumbers.is_valid_number(phonenumbers.parse(f"+1{area}{exchange}{line}")))
    style = draw(st.sampled_from(["({a}) {e}-{l}", "{a}-{e}-{l}", "{a}.{e}.{l}", "{a} {e} {l}", "1-{a}-{e}-{l}",
                                  "+1 {a} {e} {l}", "+1 ({a}) {e}-{l}", "+1{a}{e}{l}", "1 ({a}) {e} {l}",
                                  "{a}-{e}{l}"]))
    return style.format(a=area, e=exchange, l=line)


def _assert_no_digit_survives(text: str, own_digits: str, expected_kinds: set[str]) -> None:
    cleaned, kinds = _cleaned(text)
    assert _digits_left(cleaned) == own_digits, (text, cleaned)
    assert kinds and set(kinds) <= expected_kinds, (text, cleaned, kinds)


@PROPERTY
@given(st.data())
def test_no_bank_card_survives_in_any_grouping_script_or_surrounding(data):
    text, own = data.draw(_in_text(data.draw(_written(data.draw(bank_cards())))))
    _assert_no_digit_survives(text, own, {"bank_card", "id_card"})


@PROPERTY
@given(st.data())
def test_no_resident_id_survives_in_any_grouping_script_or_surrounding(data):
    digits, check = data.draw(resident_ids())
    written = data.draw(_written(digits)) if check else "".join(_DIGIT_SCRIPTS["full_width"][int(d)] for d in digits)
    if not check and data.draw(st.booleans()):
        written = digits  # a legacy number (no check character) is masked when written unbroken
    if check:
        x = data.draw(st.sampled_from(["X", "x", "Ｘ"])) if check == "X" else data.draw(_written(check))
        written += data.draw(st.sampled_from(["", "", " ", "-"])) + x
    text, own = data.draw(_in_text(written))
    cleaned, kinds = _cleaned(text)
    assert _digits_left(cleaned) == own, (text, cleaned)
    if check == "X":
        assert not re.search("[XxＸｘ]", re.sub(r"\[[A-Z_]+\]", "", cleaned)), (text, cleaned)
    assert kinds and set(kinds) <= {"id_card", "bank_card", "phone"}, (text, cleaned, kinds)


@PROPERTY
@given(st.data())
def test_no_chinese_mobile_survives_whatever_the_separators(data):
    text, own = data.draw(_in_text(data.draw(chinese_mobiles())))
    _assert_no_digit_survives(text, own, {"phone"})


@PROPERTY
@given(st.data())
def test_no_chinese_landline_survives_whatever_the_separators(data):
    text, own = data.draw(_in_text(data.draw(chinese_landlines())))
    _assert_no_digit_survives(text, own, {"phone"})


@PROPERTY
@given(st.data())
def test_no_international_phone_survives(data):
    text, own = data.draw(_in_text(data.draw(international_phones())))
    _assert_no_digit_survives(text, own, {"phone"})


@PROPERTY
@given(st.data())
def test_no_us_phone_survives_in_its_own_groupings(data):
    text, own = data.draw(_in_text(data.draw(us_phones())))
    _assert_no_digit_survives(text, own, {"phone"})


# -- e-mail addresses --------------------------------------------------------------------------------------

_LOCAL_ALPHABETS = {
    "ascii": st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-", min_size=3, max_size=20),
    "chinese": st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=2, max_size=6),
    "cyrillic": st.text("абвгдежзийклмнопрстуфхцчшщыэюя", min_size=3, max_size=12),
    "accented": st.text("abcdeéèêëfghiïjklmnñoöpqrsßtuüvwxyz", min_size=3, max_size=12),
    "devanagari": st.sampled_from(["राम", "प्रिया", "कुमार", "सुनील"]),
}
_LABEL_ALPHABETS = {
    "ascii": st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
    "chinese": st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=2, max_size=5),
    "cyrillic": st.text("абвгдежзийклмнопрстуфхцчшщыэюя", min_size=3, max_size=10),
    "accented": st.text("abcdeéfghijklmnoöpqrstuüvwxyz", min_size=3, max_size=10),
}
_TLDS = ["com", "cn", "net", "org", "co.uk", "com.cn", "de", "io", "shop", "中国", "公司", "рф", "xn--fiqs8s",
         "xn--p1ai"]
_AT_SIGNS = ["@", "@", "＠", " @ ", "@ ", " @", "﹫", "[at]", " [at] ", "(at)", " (at) ", "（at）", " AT ", " at ",
             "<b>@</b>", "<span>@</span>", "<br>@<br>", "&#64;", "&commat;", "<div>@</div>", "<p>@</p>"]
_DOTS = [".", ".", ".", "．", "。", " dot ", "[dot]", " [dot] ", "(dot)", "<span>.</span>", "&#46;", "<br>."]


@st.composite
def email_addresses(draw) -> tuple[str, list[str]]:
    """An address as written, and the parts of it (local part, domain labels) that must not survive."""
    local = draw(_LOCAL_ALPHABETS[draw(st.sampled_from(sorted(_LOCAL_ALPHABETS)))])
    assume(re.search(r"\w", local) and not local.startswith(".") and local.lower() not in {"me", "it", "at", "dot"})
    labels = [draw(_LABEL_ALPHABETS[draw(st.sampled_from(sorted(_LABEL_ALPHABETS)))])
              for _ in range(draw(st.integers(1, 3)))]
    if draw(st.integers(0, 4)) == 0:
        labels[0] = labels[0].encode("idna").decode("ascii") if not labels[0].isascii() else labels[0]
    at, dot = draw(st.sampled_from(_AT_SIGNS)), draw(st.sampled_from(_DOTS))
    tld = draw(st.sampled_from(_TLDS))
    if dot == "。":  # as an input method types it: one label, then a Latin or Chinese TLD
        labels, tld = labels[:1], draw(st.sampled_from(["com", "cn", "net", "中国", "公司"]))
    domain = dot.join([*labels, *tld.split(".")])
    return f"{local}{at}{domain}", [local, *labels]


@PROPERTY
@given(st.data())
def test_no_email_address_survives_in_any_script_or_disguise(data):
    address, parts = data.draw(email_addresses())
    text, _ = data.draw(_in_text(address))
    surroundings = unicodedata.normalize("NFKC", text.replace(address, " ")).lower()
    parts = [unicodedata.normalize("NFKC", part).lower() for part in parts]
    assume(not any(part in surroundings for part in parts))
    cleaned, kinds = _cleaned(text)
    rest = re.sub(r"\[[A-Z_]+\]", " ", cleaned).lower()
    assert not [part for part in parts if len(part) > 1 and part in rest], (text, cleaned)
    assert "email" in kinds, (text, cleaned)


# -- the false-positive side: what tickets are full of stays as it was ---------------------------------------

@st.composite
def _glued_identifiers(draw) -> str:
    """Order numbers and waybills: letters glued to their digits ("DD313617600133", "SF1234567890123")."""
    digits = draw(st.text("0123456789", min_size=8, max_size=20))
    assume(not re.fullmatch(r"(?:0086|86)?1[3-9]\d{9}", digits))  # a mobile glued to letters is still a mobile
    assume(not (len(digits) in (15, 18) and is_valid_resident_id(digits)))
    prefix = draw(st.sampled_from(["DD", "SO", "PO", "TB", "JD", "JDVA", "SF", "YT", "ZT", "EMS", "ORD", "No"]))
    return prefix + digits + draw(st.sampled_from(["", "", "CN", "A"]))


@st.composite
def _timestamps(draw) -> str:
    moment = draw(st.datetimes(datetime.datetime(2001, 9, 9, 2, 0), datetime.datetime(2033, 5, 18)))
    style = draw(st.sampled_from(["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y/%m/%d %H:%M", "%Y.%m.%d", "%d.%m.%Y",
                                  "%Y%m%d%H%M%S", "%Y%m%d", "%Y年%m月%d日 %H:%M", "unix", "unix_ms"]))
    seconds = int(moment.replace(tzinfo=datetime.UTC).timestamp())
    if style == "unix":
        return str(seconds)
    if style == "unix_ms":
        return str(seconds * 1000 + draw(st.integers(0, 999)))
    return moment.strftime(style)


_AMOUNTS = st.builds(
    lambda value, style: style.format(value),
    st.decimals(min_value=0, max_value=9_999_999, places=2, allow_nan=False, allow_infinity=False),
    st.sampled_from(["¥{:,}", "${:,}", "{}元", "{:,} RMB", "￥{}", "€{:,}", "共{}元"]),
)
_VERSIONS = st.builds(
    lambda major, parts, style: style.format(".".join(map(str, [major, *parts]))),
    st.integers(0, 30),
    st.lists(st.integers(0, 99), min_size=1, max_size=3),
    st.sampled_from(["v{}", "版本{}", "Android {}", "iOS {}", "build {}", "{}-beta"]),
)
_IPV4_ADDRESSES = st.builds(lambda parts: ".".join(map(str, parts)),
                            st.lists(st.integers(0, 255), min_size=4, max_size=4))


@PROPERTY
@given(st.lists(st.one_of(_glued_identifiers(), _timestamps(), _AMOUNTS, _VERSIONS, _IPV4_ADDRESSES), min_size=1,
                max_size=3), st.lists(_BOUNDARY.filter(lambda b: b not in ("(", "（")), min_size=3, max_size=3))
def test_order_numbers_waybills_times_amounts_versions_and_addresses_stay_intact(items, boundaries):
    text = "订单 " + "".join(f"{item}{boundary}说明" for item, boundary in zip(items, boundaries))
    [result] = clean_texts([text], MASKER)
    assert result.pii_kinds == () and result.text == clean_texts([text], PiiMasker(phone_regions=()))[0].text, text
