import json

import pyarrow as pa
import pytest

from dify_pipeline.clean.outgoing_check import OutgoingScan, find_personal_data, shape
from dify_pipeline.clean.pii import PiiMasker

UNMASKED = {
    "email": ["zhang.wei@qq.com", "张伟@例子.中国", "li.na＠ｑｑ．ｃｏｍ", "zhang [at] qq [dot] com",
              "zhang at qq dot com"],
    "id_card": ["11010519491231002X", "110105 19491231 002x", "110105491231002"],
    "bank_card": ["6222021234567890128", "622 20212 3456789 0128",
                  "４１１１\u200b１１１１\u200b１１１１\u200b１１１１"],
    "phone": ["13800138000", "138.0013.8000", "+86 21 1234 5678", "021-12345678", "+44 20 7946 0958", "(212) 555-0147"],
}


@pytest.mark.parametrize("kind, value", [(kind, value) for kind, values in UNMASKED.items() for value in values])
def test_each_kind_is_found_in_unmasked_text(kind, value):
    assert kind in {found for found, _ in find_personal_data(f"请联系 {value} 谢谢")}


@pytest.mark.parametrize("kind, value", [(kind, value) for kind, values in UNMASKED.items() for value in values])
def test_nothing_is_found_once_the_masker_has_been(kind, value):
    masked, _ = PiiMasker().mask(f"请联系 {value} 谢谢")
    assert find_personal_data(masked) == []


@pytest.mark.parametrize(
    "text",
    ["订单DD313617600133 运单SF1234567890123", "2024-06-15 10:30:00 1718445600123 20240615103000", "¥1,299.00",
     "v8.13.0, 10.2.3.4567", "服务器 178.78.127.186", "客服热线 400-820-8820", "号码 2112345678", "a@b 和 @客服",
     "bought it at amazon.com", "order 2125550147"],
)
def test_what_the_masker_rightly_leaves_is_not_flagged(text):
    assert PiiMasker().find(text) == []
    assert find_personal_data(text) == []


def test_a_shape_shows_the_grouping_not_the_data():
    assert shape("6222 0212-3456") == "9999 9999-9999"
    assert shape("张伟@例子.中国") == "aa@aa.aa"


def test_a_scan_counts_kinds_and_rows_and_keeps_a_few_shapes_never_values():
    table = pa.table({
        "record_key": ["1", "2", "3", "4"],
        "subject": ["退款", "电话 138 0013 8000", None, "[PHONE]"],
        "contact": [13800138000, None, 42, 13900139000],  # not text: scanned as its text form
    })
    scan = OutgoingScan(["subject", "contact"])
    scan.add(table)
    scan.add(table.slice(0, 1))
    assert not scan.passed
    assert scan.rows_scanned == 5 and scan.rows_with_findings == 4  # 3 in the first batch, 1 in the second
    assert scan.counts == {"phone": 4}
    metadata = scan.metadata()
    assert metadata["found_by_kind"] == {"phone": 4} and metadata["columns_scanned"] == "subject, contact"
    assert {(s["record_key"], s["column"], s["shape"]) for s in metadata["samples"]} == {
        ("2", "subject", "999 9999 9999"), ("1", "contact", "99999999999"), ("4", "contact", "99999999999")}
    assert "138" not in json.dumps(metadata) and "139" not in json.dumps(metadata)


def test_a_clean_batch_passes():
    scan = OutgoingScan(["body"])
    scan.add(pa.table({"record_key": ["1"], "body": ["我的订单DD313617600133，电话[PHONE]，邮箱[EMAIL]"]}))
    assert scan.passed and scan.metadata()["found_by_kind"] == {} and scan.metadata()["samples"] == []


def test_an_empty_day_with_no_chunks_at_all_passes():
    # pyarrow 16's indices_nonzero crashes the process on a chunked array without chunks (an empty day's table).
    scan = OutgoingScan(["body"])
    scan.add(pa.table({"record_key": pa.chunked_array([], pa.string()), "body": pa.chunked_array([], pa.string())}))
    assert scan.passed and scan.rows_scanned == 0
