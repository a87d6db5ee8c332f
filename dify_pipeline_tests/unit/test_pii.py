from collections import Counter

import pytest

from dify_pipeline.clean.pii import (
    DEFAULT_PII_RULES,
    PiiMasker,
    id_check_character,
    is_valid_bank_card,
    luhn_check_digit,
)

VALID_ID = "11010519491231002X"  # the standard's worked example
VALID_CARD = "4111111111111111"  # Luhn-valid test card number


@pytest.fixture(scope="module")
def masker() -> PiiMasker:
    return PiiMasker()


def test_check_characters_match_published_examples():
    assert id_check_character(VALID_ID[:17]) == "X"
    assert luhn_check_digit("7992739871") == "3"
    assert luhn_check_digit(VALID_CARD[:-1]) == VALID_CARD[-1]


def test_rules_apply_id_card_then_bank_card_then_email_then_phone():
    assert [rule.name for rule in DEFAULT_PII_RULES] == ["id_card", "bank_card", "email", "phone"]


@pytest.mark.parametrize("number", [VALID_ID, VALID_ID.lower(), "110105198001011553"])
def test_resident_id_with_valid_checksum_is_masked(masker, number):
    assert masker.mask(f"身份证号{number}，谢谢") == ("身份证号[ID_CARD]，谢谢", Counter(id_card=1))


def test_legacy_15_digit_resident_id_is_masked(masker):
    assert masker.mask("老身份证 110105491231002") == ("老身份证 [ID_CARD]", Counter(id_card=1))


def test_18_digit_number_with_bad_checksum_is_not_an_id_card(masker):
    number = "110105194912310021"
    assert not is_valid_bank_card(number)  # so no other rule can take it either
    assert masker.find(f"编号{number}") == []


def test_id_number_with_impossible_birth_date_is_not_an_id_card(masker):
    first_17 = "11010519491331002"  # month 13
    assert masker.find(first_17 + id_check_character(first_17)) == []


def test_id_number_that_is_also_luhn_valid_is_masked_as_id_card(masker):
    number = "110105198001011553"
    assert is_valid_bank_card(number)
    assert masker.find(number) == [("id_card", number)]


@pytest.mark.parametrize(
    "card",
    [VALID_CARD, "4111 1111 1111 1111", "4111-1111-1111-1111", "6222 0212 3456 7890 128", "3782 822463 10005"],
)
def test_luhn_valid_bank_card_is_masked_plain_or_grouped(masker, card):
    assert is_valid_bank_card(card)
    assert masker.find(f"退款打到 {card} 这张卡") == [("bank_card", card)]


def test_luhn_invalid_16_digit_number_is_not_a_bank_card(masker):
    assert masker.find("卡号 4111111111111112 和 4111 1111 1111 1112") == []


@pytest.mark.parametrize(
    "email", ["zhang.wei@qq.com", "li_na+shop@mail.example.co.uk", "13800138000@163.com", "J.Smith@Example.COM"]
)
def test_email_is_masked(masker, email):
    assert masker.find(f"我的邮箱是{email}，谢谢") == [("email", email)]


@pytest.mark.parametrize(
    "phone",
    ["13800138000", "+86 138 0013 8000", "+86-138-0013-8000", "8613800138000", "008613800138000", "86 19912345678"],
)
def test_chinese_mobile_is_masked_with_or_without_country_code(masker, phone):
    assert masker.mask(f"电话{phone}，") == ("电话[PHONE]，", Counter(phone=1))


@pytest.mark.parametrize(
    "phone",
    ["+1 415-555-0100", "(415) 555-0100", "415-555-0100", "+1 (646) 555-0147", "+44 20 7946 0958",
     "(020) 1234-5678", "021-12345678", "0755 1234567"],
)
def test_international_and_landline_phones_are_masked(masker, phone):
    assert masker.find(f"call me at {phone} today") == [("phone", phone)]


def test_phone_inside_a_longer_number_is_not_masked(masker):
    text = "订单号2024061513800138000 流水号1380013800012"
    assert masker.mask(text) == (text, Counter())


def test_dates_amounts_and_order_numbers_are_not_masked(masker):
    text = "2024-06-15 10:30 付款¥1299.00，订单 DD313617600133，等了15天，共3件"
    assert masker.find(text) == []


def test_each_kind_is_counted(masker):
    text = f"ID {VALID_ID}, card {VALID_CARD}, mail a@b.com, tel 13800138000 or +1 415-555-0100"
    masked, counts = masker.mask(text)
    assert masked == "ID [ID_CARD], card [BANK_CARD], mail [EMAIL], tel [PHONE] or [PHONE]"
    assert counts == Counter(id_card=1, bank_card=1, email=1, phone=2)


def test_find_reports_kind_and_value_in_rule_order(masker):
    assert masker.find(f"tel 13800138000, ID {VALID_ID}") == [("id_card", VALID_ID), ("phone", "13800138000")]


def test_masking_twice_changes_nothing_more(masker):
    masked, _ = masker.mask(f"{VALID_ID} {VALID_CARD} a@b.com 13800138000")
    assert masker.mask(masked) == (masked, Counter())


def test_extra_patterns_are_masked_after_the_defaults_with_an_upper_case_placeholder():
    masker = PiiMasker(extra_patterns={"order_no": r"DD[0-9]{12}"})
    assert masker.mask("订单DD313617600133，电话13800138000") == (
        "订单[ORDER_NO]，电话[PHONE]",
        Counter(order_no=1, phone=1),
    )
    assert masker.kinds == ["id_card", "bank_card", "email", "phone", "order_no"]


def test_invalid_extra_pattern_is_an_error_naming_the_pattern():
    with pytest.raises(ValueError, match="order_no"):
        PiiMasker(extra_patterns={"order_no": "DD[0-9"})


def test_extra_pattern_may_not_reuse_a_default_name():
    with pytest.raises(ValueError, match="unique"):
        PiiMasker(extra_patterns={"email": "x"})
