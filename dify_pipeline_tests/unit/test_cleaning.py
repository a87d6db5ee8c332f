import datetime
import re

import pandas as pd
import pydantic
import pytest

from dify_pipeline.clean import cleaning
from dify_pipeline.clean.cleaning import CleaningConfig, CleanResult, clean_tickets
from dify_pipeline.clean.pii import PiiMasker
from dify_pipeline_dev.demo.sample_data import PII_SAMPLES, generate_tickets

CONFIG = CleaningConfig()


def tickets(*rows: dict, key_dtype: str = "Int64") -> pd.DataFrame:
    """A raw frame shaped like the source table; each row overrides the defaults it names."""
    defaults = {
        "subject": "Refund",
        "body": "Please refund my order.",
        "created_at": "2024-06-15 09:00:00",
        "updated_at": "2024-06-15 09:00:00",
    }
    frame = pd.DataFrame([{**defaults, **row} for row in rows])
    frame["id"] = frame["id"].astype(key_dtype)
    for column in ("created_at", "updated_at"):
        frame[column] = pd.to_datetime(frame[column], format="ISO8601")
    return frame


def assert_reconciles(raw: pd.DataFrame, result: CleanResult) -> None:
    assert len(raw) == len(result.clean) + len(result.quarantine) + result.duplicates_removed
    assert result.clean["record_key"].is_unique


def test_rows_reconcile_on_generated_tickets():
    raw = generate_tickets(datetime.date(2024, 6, 15), count=1000, seed=3)
    result = clean_tickets(raw, CONFIG)
    assert_reconciles(raw, result)
    assert result.duplicates_removed > 0
    assert set(result.quarantine_reasons) == {"missing_key", "empty_text"}
    assert sum(result.quarantine_reasons.values()) == len(result.quarantine)


def test_latest_update_wins():
    raw = tickets(
        {"id": 1, "body": "newest", "updated_at": "2024-06-15 12:00"},
        {"id": 1, "body": "oldest", "updated_at": "2024-06-15 10:00"},
        {"id": 1, "body": "middle", "updated_at": "2024-06-15 11:00"},
    )
    result = clean_tickets(raw, CONFIG)
    assert result.clean["body"].tolist() == ["newest"]
    assert result.duplicates_removed == 2
    assert_reconciles(raw, result)


def test_tied_updates_go_to_the_later_row():
    raw = tickets(
        *({"id": 7, "body": f"version {n}", "updated_at": "2024-06-15 10:00"} for n in range(40)),
        {"id": 7, "body": "older", "updated_at": "2024-06-15 09:00"},
    )
    assert clean_tickets(raw, CONFIG).clean["body"].tolist() == ["version 39"]


def test_null_updated_at_loses_to_any_update():
    raw = tickets(
        {"id": 7, "body": "dated", "updated_at": "2001-01-01 00:00"},
        {"id": 7, "body": "undated", "updated_at": None},
    )
    result = clean_tickets(raw, CONFIG)
    assert result.clean["body"].tolist() == ["dated"]
    assert result.duplicates_removed == 1


def test_integer_and_integral_float_keys_are_one_record():
    raw = tickets(
        {"id": 42, "body": "as int", "updated_at": "2024-06-15 10:00"},
        {"id": 42.0, "body": "as float", "updated_at": "2024-06-15 11:00"},
        {"id": " 42 ", "body": "as text", "updated_at": "2024-06-15 09:00"},
        {"id": 42.5, "body": "fractional"},
        key_dtype="object",
    )
    result = clean_tickets(raw, CONFIG)
    assert result.clean[["record_key", "body"]].values.tolist() == [["42", "as float"], ["42.5", "fractional"]]


def test_missing_or_blank_keys_are_quarantined():
    raw = tickets({"id": None}, {"id": float("nan")}, {"id": "  "}, {"id": "A-1"}, key_dtype="object")
    result = clean_tickets(raw, CONFIG)
    assert result.clean["record_key"].tolist() == ["A-1"]
    assert result.quarantine["quarantine_reason"].tolist() == ["missing_key"] * 3
    assert result.quarantine["record_key"].isna().all()
    assert result.quarantine_reasons == {"missing_key": 3}


def test_null_or_unparseable_timestamps_are_quarantined():
    raw = tickets({"id": 1}, {"id": 2}, {"id": 3})
    raw["created_at"] = pd.Series(["2024-06-15 09:00", None, "not a date"], dtype="object")
    result = clean_tickets(raw, CONFIG)
    assert result.clean["record_key"].tolist() == ["1"]
    assert result.quarantine[["record_key", "quarantine_reason", "quarantine_detail"]].values.tolist() == [
        ["2", "invalid_timestamp", "created_at is null"],
        ["3", "invalid_timestamp", "created_at is not a date/time"],
    ]


def test_a_row_without_key_or_timestamp_is_quarantined_once_as_missing_key():
    raw = tickets({"id": None, "created_at": None})
    assert clean_tickets(raw, CONFIG).quarantine_reasons == {"missing_key": 1}


@pytest.mark.parametrize(
    ("subject", "body"),
    [("", "  \n\t "), ("<p>&nbsp;</p>", "<div><br/></div><script>track()</script>"), ("", None), (None, "\u200b")],
)
def test_rows_left_without_any_text_are_quarantined(subject, body):
    raw = tickets({"id": 1, "subject": subject, "body": body}, {"id": 2})
    result = clean_tickets(raw, CONFIG)
    assert result.clean["record_key"].tolist() == ["2"]
    assert result.quarantine["quarantine_reason"].tolist() == ["empty_text"]
    assert result.quarantine["record_key"].tolist() == ["1"]


def test_empty_text_is_judged_after_dedupe():
    raw = tickets(
        {"id": 1, "subject": "", "body": "", "updated_at": "2024-06-15 12:00"},
        {"id": 1, "body": "older text", "updated_at": "2024-06-15 10:00"},
    )
    result = clean_tickets(raw, CONFIG)
    assert (len(result.clean), result.duplicates_removed, result.quarantine_reasons) == (0, 1, {"empty_text": 1})


def test_key_and_timestamp_dtypes_are_kept():
    raw = tickets({"id": 2}, {"id": None}, {"id": 1})
    raw["created_at"] = raw["created_at"].dt.tz_localize("Asia/Shanghai")
    result = clean_tickets(raw, CONFIG)
    for frame in (result.clean, result.quarantine):
        assert frame["id"].dtype == "Int64"
        assert frame["created_at"].dtype == raw["created_at"].dtype
        assert frame["updated_at"].dtype == raw["updated_at"].dtype
    assert result.clean["id"].tolist() == [1, 2]


def test_plain_int64_keys_stay_int64():
    raw = tickets({"id": 10}, {"id": 9}, key_dtype="int64")
    result = clean_tickets(raw, CONFIG)
    assert result.clean["id"].dtype == "int64"
    assert result.clean["record_key"].tolist() == ["10", "9"]  # sorted as text


def test_output_columns_and_types():
    raw = tickets({"id": 1}, {"id": None})
    result = clean_tickets(raw, CONFIG)
    assert list(result.clean.columns) == [*raw.columns, "record_key", "text_truncated", "pii_masked"]
    assert list(result.quarantine.columns) == [*raw.columns, "record_key", "quarantine_reason", "quarantine_detail"]
    assert result.clean.dtypes[["record_key", "text_truncated", "pii_masked"]].astype(str).tolist() == [
        "str", "bool", "int64"
    ]
    assert list(result.clean.index) == [0]


def test_text_is_normalized():
    raw = tickets({"id": 1, "subject": " ＶＩＰ\u3000退款 ", "body": "<p>AT&amp;T</p>\r\n<br>ok\x00"})
    clean = clean_tickets(raw, CONFIG).clean
    assert clean[["subject", "body"]].values.tolist() == [["VIP 退款", "AT&T ok"]]


def test_long_text_is_truncated_and_flagged():
    raw = tickets({"id": 1, "body": "x" * 4001}, {"id": 2, "subject": "s" * 201}, {"id": 3, "body": "x" * 4000})
    result = clean_tickets(raw, CONFIG)
    assert result.clean["text_truncated"].tolist() == [True, True, False]
    assert result.clean["body"].str.len().max() == 4000
    assert result.truncated == 2


def test_columns_without_a_limit_are_not_truncated():
    raw = tickets({"id": 1, "body": "x" * 5000})
    result = clean_tickets(raw, CleaningConfig(max_chars={"subject": 10}))
    assert (result.truncated, len(result.clean.at[0, "body"])) == (0, 5000)


def test_masking_before_truncating_never_leaves_part_of_a_phone():
    raw = tickets({"id": 1, "body": "x" * 3995 + " 13800138000 tail"})  # the phone straddles character 4000
    body = clean_tickets(raw, CONFIG).clean.at[0, "body"]
    assert body == "x" * 3995 + " [PHO"


def test_entity_hidden_email_is_masked():
    raw = tickets({"id": 1, "body": "mail me: zhang&#64;qq.com"})
    assert clean_tickets(raw, CONFIG).clean.at[0, "body"] == "mail me: [EMAIL]"


def test_pii_is_counted_per_row_and_by_kind_over_clean_and_quarantine():
    raw = tickets(
        {"id": 1, "subject": "call 13800138000", "body": "or mail a@b.com, a2@b.com"},
        {"id": 2, "body": "nothing here"},
        {"id": None, "body": "card 4111 1111 1111 1111"},
    )
    result = clean_tickets(raw, CONFIG)
    assert result.clean["pii_masked"].tolist() == [3, 0]
    assert result.pii_masked == {"id_card": 0, "bank_card": 1, "email": 2, "phone": 1}


def test_quarantined_text_is_masked_too():
    raw = tickets({"id": None, "subject": "13800138000", "body": "<p>a@b.com</p>"})
    quarantine = clean_tickets(raw, CONFIG).quarantine
    assert quarantine[["subject", "body"]].values.tolist() == [["[PHONE]", "<p>[EMAIL]</p>"]]


def test_extra_pii_patterns_are_masked():
    raw = tickets({"id": 1, "body": "订单DD313617600133"})
    result = clean_tickets(raw, CleaningConfig(extra_pii_patterns={"order_no": r"DD[0-9]{12}"}))
    assert result.clean.at[0, "body"] == "订单[ORDER_NO]"
    assert result.pii_masked["order_no"] == 1


def test_config_rejects_an_invalid_extra_pattern():
    with pytest.raises(pydantic.ValidationError, match="order_no"):
        CleaningConfig(extra_pii_patterns={"order_no": "DD[0-9"})


def test_config_rejects_limits_for_columns_that_are_not_text_columns():
    with pytest.raises(pydantic.ValidationError, match="summary"):
        CleaningConfig(max_chars={"summary": 100})


def test_missing_configured_columns_are_an_error():
    with pytest.raises(ValueError, match="body"):
        clean_tickets(tickets({"id": 1}).drop(columns="body"), CONFIG)


def test_lost_rows_are_an_error(monkeypatch):
    real_quarantine = cleaning._quarantine
    monkeypatch.setattr(cleaning, "_quarantine", lambda *args: real_quarantine(*args).iloc[1:])
    with pytest.raises(RuntimeError, match="lost track"):
        clean_tickets(tickets({"id": None}), CONFIG)


def test_no_planted_pii_survives_cleaning():
    masker = PiiMasker()
    planted = {value for values in PII_SAMPLES.values() for value in values}
    planted_numbers = {
        re.sub(r"[^0-9X]", "", value) for kind, values in PII_SAMPLES.items() if kind != "email" for value in values
    }
    for seed in (1, 2):
        raw = generate_tickets(datetime.date(2024, 6, 15), count=2000, seed=seed)
        result = clean_tickets(raw, CONFIG)
        assert_reconciles(raw, result)
        assert sum(result.pii_masked.values()) > 200
        for text in [*result.clean["subject"], *result.clean["body"]]:
            assert masker.find(text) == []
            assert not [value for value in planted if value in text]
            digits_only = re.sub(r"[ ()+.-]", "", text)
            assert not [number for number in planted_numbers if number in digits_only]


@pytest.mark.parametrize("chunk_rows", [1, 7, 128, 999])
def test_cleaning_chunk_by_chunk_gives_the_result_of_the_whole_day(chunk_rows):
    """The step cleans a day one batch at a time: duplicates across batches, quarantine and counts come out the
    same as cleaning the day at once."""
    raw = generate_tickets(datetime.date(2024, 6, 15), count=1000, seed=5)
    whole = clean_tickets(raw, CONFIG)
    chunked = clean_tickets(raw, CONFIG, chunk_rows=chunk_rows)
    pd.testing.assert_frame_equal(chunked.clean, whole.clean)
    order = ["quarantine_reason", "record_key", "subject", "body"]
    sort = lambda frame: frame.sort_values(order, na_position="first").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(sort(chunked.quarantine), sort(whole.quarantine))
    assert (chunked.duplicates_removed, chunked.quarantine_reasons, chunked.pii_masked, chunked.truncated) == (
        whole.duplicates_removed, whole.quarantine_reasons, whole.pii_masked, whole.truncated)
    assert whole.duplicates_removed > 0


def test_the_latest_update_wins_across_chunks():
    raw = tickets(
        {"id": 1, "body": "newest", "updated_at": "2024-06-15 12:00"},
        {"id": 2, "body": "two"},
        {"id": 1, "body": "oldest", "updated_at": "2024-06-15 10:00"},
        {"id": 1, "body": "tied, later row", "updated_at": "2024-06-15 12:00"},
    )
    result = clean_tickets(raw, CONFIG, chunk_rows=1)
    assert result.clean["body"].tolist() == ["tied, later row", "two"]
    assert result.duplicates_removed == 2


def _key_chunks(rows: int, chunk_rows: int, text_keys: bool = False):
    import numpy as np

    for start in range(0, rows, chunk_rows):
        count = min(chunk_rows, rows - start)
        ids = pd.array(np.arange(start, start + count) % (rows // 2), dtype="Int64")  # each key twice
        updated = pd.Timestamp("2026-11-20", tz="UTC") + pd.to_timedelta(np.arange(start, start + count), unit="s")
        yield pd.DataFrame({
            "id": ids.astype(str) if text_keys else ids,
            "created_at": pd.Series(updated, dtype="datetime64[us, UTC]"),
            "updated_at": pd.Series(updated, dtype="datetime64[us, UTC]"),
        })


@pytest.mark.parametrize("text_keys", [False, True])
def test_the_day_plan_keeps_one_byte_per_row_and_no_python_objects(text_keys):
    plan = cleaning.plan_day(_key_chunks(200_000, 16_384, text_keys), CONFIG)
    assert plan.rows == 200_000
    assert plan.nbytes <= plan.rows  # the day's keys are not kept: the cleaner reads each chunk's own
    arrays = [value for value in vars(plan).values() if hasattr(value, "dtype")]
    assert arrays and all(array.dtype != object for array in arrays)
    assert plan.duplicates_removed == 100_000
    assert int(plan.winner[100_000:].sum()) == 100_000  # each key's later row (its later update) wins


def test_the_plan_decides_the_same_winners_for_integer_and_text_keys():
    by_integer = cleaning.plan_day(_key_chunks(10_000, 999), CONFIG)
    by_text = cleaning.plan_day(_key_chunks(10_000, 999, text_keys=True), CONFIG)
    assert (by_integer.flags == by_text.flags).all()


def test_chunks_whose_keys_arrive_as_integers_and_as_text_are_planned_as_one_day():
    integer_chunk, text_chunk = list(_key_chunks(2_000, 1_000))
    text_chunk = text_chunk.assign(id=integer_chunk["id"].astype(str).to_numpy())  # the same keys, as text
    plan = cleaning.plan_day([integer_chunk, text_chunk], CONFIG)
    assert plan.duplicates_removed == 1_000 and plan.winner[1_000:].all()
