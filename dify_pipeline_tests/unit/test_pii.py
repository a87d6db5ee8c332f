from collections import Counter

import pyarrow as pa
import pytest

from dify_pipeline.clean.pii import (
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


def test_kinds_apply_email_then_id_card_then_bank_card_then_phone():
    assert PiiMasker().kinds == ["email", "id_card", "bank_card", "phone"]


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
    number = "310104198001010156"
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


def test_find_reports_addresses_first_then_numbers_in_text_order(masker):
    found = masker.find(f"tel 13800138000, ID {VALID_ID}, a@b.cn")
    assert found == [("email", "a@b.cn"), ("phone", "13800138000"), ("id_card", VALID_ID)]


def test_masking_twice_changes_nothing_more(masker):
    masked, _ = masker.mask(f"{VALID_ID} {VALID_CARD} a@b.com 13800138000")
    assert masker.mask(masked) == (masked, Counter())


def test_extra_patterns_are_masked_after_the_defaults_with_an_upper_case_placeholder():
    masker = PiiMasker(extra_patterns={"order_no": r"DD[0-9]{12}"})
    assert masker.mask("订单DD313617600133，电话13800138000") == (
        "订单[ORDER_NO]，电话[PHONE]",
        Counter(order_no=1, phone=1),
    )
    assert masker.kinds == ["email", "id_card", "bank_card", "phone", "order_no"]


def test_invalid_extra_pattern_is_an_error_naming_the_pattern():
    with pytest.raises(ValueError, match="order_no"):
        PiiMasker(extra_patterns={"order_no": "DD[0-9"})


def test_extra_pattern_may_not_reuse_a_default_name():
    with pytest.raises(ValueError, match="unique"):
        PiiMasker(extra_patterns={"email": "x"})


# -- issue 11: the formats people really write -------------------------------------------------------------

@pytest.mark.parametrize(
    "email",
    ["张伟@例子.中国", "zhang.wei@例子.xn--fiqs8s", "李娜@xn--fiqs8s.xn--55qx5d", "müller@münchen.de", "иван@почта.рф",
     "zhang＠qq．com", "zhang[at]qq.com", "zhang (at) qq (dot) com", "zhang @ qq.com", "zhang at qq dot com",
     "zhang.wei at qq.com", "o'brien+shop@mail.example.co.uk"],
)
def test_unicode_punycode_and_disguised_addresses_are_masked(masker, email):
    assert masker.mask(f"邮箱 {email} ，谢谢") == ("邮箱 [EMAIL] ，谢谢", Counter(email=1))


def test_the_address_starts_where_the_script_changes(masker):
    assert masker.mask("联系zhang.wei@qq.com谢谢") == ("联系[EMAIL]谢谢", Counter(email=1))


def test_a_local_part_is_at_most_64_characters(masker):
    sentence = "请" * 100
    assert masker.mask(f"{sentence}张伟@例子.中国") == ("请" * 38 + "[EMAIL]", Counter(email=1))


@pytest.mark.parametrize("text", ["I bought it at amazon.com today", "see you at home.Then", "@客服 你好", "a@b"])
def test_the_word_at_before_a_shop_and_mentions_are_not_addresses(masker, text):
    assert masker.find(text) == []


@pytest.mark.parametrize(
    "card",
    ["6222021234567890128", "62220-21234-56789-0128", "6222.0212.3456.7890.128", "622 202 123 456 789 012 8",
     "6222\u200b0212\u200b3456\u200b7890\u200b128", "６２２２ ０２１２ ３４５６ ７８９０ １２８",
     "6 2 2 2 0 2 1 2 3 4 5 6 7 8 9 0 1 2 8",
     "6222 - 0212 - 3456 - 7890 - 128", "4111\u00a01111\u30001111 1111"],
)
def test_a_luhn_valid_card_is_masked_in_any_grouping_and_script(masker, card):
    assert masker.mask(f"卡号：{card}，谢谢") == ("卡号：[BANK_CARD]，谢谢", Counter(bank_card=1))


def test_a_card_glued_to_letters_is_a_waybill(masker):
    text = "顺丰单号SF4111111111111111，京东JD4111111111111111X"
    assert masker.find(text) == []


@pytest.mark.parametrize("stamp", ["20240615103000123", "2024061510300012", "1718445600123"])
def test_date_stamps_and_millisecond_times_are_not_cards_even_when_luhn_valid(masker, stamp):
    number = stamp + luhn_check_digit(stamp)
    assert masker.find(f"时间 {number}") == []


@pytest.mark.parametrize(
    "number",
    ["110105 19491231 002X", "110-105-194-912-310-02x", "１１０１０５１９４９１２３１００２Ｘ", "11010519491231002 X"],
)
def test_resident_ids_are_masked_whatever_the_separators(masker, number):
    assert masker.mask(f"身份证：{number}。") == ("身份证：[ID_CARD]。", Counter(id_card=1))


@pytest.mark.parametrize(
    "phone",
    ["138.0013.8000", "1 3 8 0 0 1 3 8 0 0 0", "138\u200b0013\u200b8000", "１３８ ００１３ ８０００",
     "(+86) 138 0013 8000", "+86 (138) 0013-8000", "+86 21 1234 5678", "0086 21 1234 5678", "V13800138000"],
)
def test_chinese_phones_are_masked_whatever_the_separators(masker, phone):
    masked, counts = masker.mask(f"电话 {phone} 谢谢")
    assert counts == Counter(phone=1) and not any(char.isdigit() for char in masked)


def test_numbers_next_to_each_other_are_masked_one_by_one(masker):
    text = f"13800138000 13900139000 {VALID_CARD} 5"
    assert masker.mask(text) == ("[PHONE] [PHONE] [BANK_CARD] 5", Counter(phone=2, bank_card=1))


@pytest.mark.parametrize(
    "phone", ["+44 20 7946 0958", "+49 30 901820", "+81 3-1234-5678", "+33 1 23 45 67 89", "0044 20 7946 0958",
              "(212) 555-0147", "212.555.0147", "1-646-555-0147"],
)
def test_phones_of_other_countries_are_masked_through_phonenumbers(masker, phone):
    assert masker.mask(f"call me on {phone} please") == ("call me on [PHONE] please", Counter(phone=1))


def test_national_phones_of_other_regions_need_their_region():
    assert PiiMasker().find("ring 030 901820 tonight") == []
    assert PiiMasker(phone_regions=["DE"]).find("ring 030 901820 tonight") == [("phone", "030 901820")]


@pytest.mark.parametrize(
    "text",
    ["订单DD313617600133", "运单SF1234567890123 JDVA12345678901 YT1234567890123 EA123456789CN 1Z999AA10123456784",
     "2024-06-15 10:30:00, 2024/06/15, 20240615103000, 1718445600, 1718445600123", "¥1,299.00 $89.90 12,345.67元",
     "version 10.2.3.4567, v8.13.0, Android 14.0.1", "192.168.100.200 10.0.0.1", "ip 139.196.100.200"],
)
def test_order_numbers_waybills_times_amounts_and_versions_stay(masker, text):
    assert masker.find(text) == []


def test_candidates_flag_every_text_the_masker_could_change(masker):
    texts = ["no digits here", "1234567", "邮箱 a@b.cn", "meet at 5", None, "order 123456"]
    assert masker.candidates(pa.array(texts)).to_pylist() == [False, True, True, True, None, False]
    assert PiiMasker(extra_patterns={"x": "here"}).candidates(pa.array(texts)).to_pylist() == [True] * 4 + [False, True]


def test_a_legacy_id_is_masked_only_unbroken_so_two_numbers_side_by_side_are_not_one(masker):
    assert masker.find("老身份证 110105491231002") == [("id_card", "110105491231002")]
    assert masker.mask("订单 110000000110 (010) 20000000") == ("订单 110000000110 [PHONE]", Counter(phone=1))


def test_a_number_written_as_an_ip_address_is_taken_for_one(masker):
    assert masker.find("服务器 10.130.100.200 和 192.168.1.13") == []


def test_an_ideographic_full_stop_ends_the_sentence_not_the_domain(masker):
    assert masker.mask("邮箱zhang@qq.com。我的订单DD313617600133还没到。") == (
        "邮箱[EMAIL]。我的订单DD313617600133还没到。", Counter(email=1))
    assert masker.mask("邮箱 zhang@qq。com 和 张伟@例子。中国") == ("邮箱 [EMAIL] 和 [EMAIL]", Counter(email=2))


def test_a_plus_makes_a_phone_of_what_looks_like_an_ip_address(masker):
    assert masker.mask("call +49.3.0.1 20000 or + 49.3.0.1 20000") == ("call [PHONE] or [PHONE]", Counter(phone=2))
