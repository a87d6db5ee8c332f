import datetime
import html
import unicodedata

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateTable

from dify_pipeline.clean.pii import PiiMasker
from dify_pipeline_dev.demo.sample_data import (
    PII_SAMPLES,
    create_source_table,
    generate_tickets,
    insert_tickets,
    pii_values_in,
    tickets_table,
)

DAY = datetime.date(2024, 6, 15)


@pytest.fixture(scope="module")
def tickets() -> pd.DataFrame:
    return generate_tickets(DAY)


def texts(tickets: pd.DataFrame) -> list[str]:
    return [text for column in ("subject", "body") for text in tickets[column].dropna()]


def test_the_same_seed_gives_the_same_tickets(tickets):
    pd.testing.assert_frame_equal(generate_tickets(DAY), tickets)
    assert not generate_tickets(DAY, seed=8)["body"].equals(tickets["body"])


def test_columns_and_types(tickets):
    assert len(tickets) == 3000
    assert tickets.dtypes.astype(str).to_dict() == {
        "id": "Int64",
        "subject": "str",
        "body": "str",
        "channel": "str",
        "customer_id": "int64",
        "priority": "str",
        "created_at": "datetime64[us]",
        "updated_at": "datetime64[us]",
    }
    assert set(tickets["channel"]) == {"email", "web", "app", "phone"}
    assert set(tickets["priority"]) == {"low", "normal", "high", "urgent"}
    assert (tickets["updated_at"] >= tickets["created_at"]).all()


def test_created_at_falls_on_the_day_except_a_few_on_the_neighbouring_days(tickets):
    days = tickets["created_at"].dt.date
    on_neighbours = days.isin([DAY - datetime.timedelta(days=1), DAY + datetime.timedelta(days=1)])
    assert (days.eq(DAY) | on_neighbours).all()
    assert 0.01 < on_neighbours.mean() < 0.03


def test_local_times_exist_on_a_daylight_saving_day():
    spring_forward = generate_tickets(datetime.date(2024, 3, 10), count=2000, timezone="America/New_York")
    local = spring_forward["created_at"].dt.tz_localize("America/New_York", nonexistent="NaT", ambiguous="NaT")
    assert local.notna().all()


def test_about_sixty_percent_of_tickets_are_chinese(tickets):
    chinese = tickets["subject"].str.contains("[\u4e00-\u9fff]")
    assert 0.55 < chinese.mean() < 0.65


@pytest.mark.parametrize(
    ("chinese_words", "english_words"),
    [(("快递", "物流"), ("delivery",)), (("退款",), ("refund",)), (("建议",), ("feature",)), (("登录",), ("log in",)),
     (("支付",), ("payment",)), (("质量",), ("broken",)), (("维修",), ("repair",)), (("修改订单",), ("change the",)),
     (("崩溃",), ("bug", "crash")), (("发票",), ("invoice",))],
)
def test_every_category_is_written_about_in_both_languages(tickets, chinese_words, english_words):
    all_text = "\n".join(texts(tickets)).lower()
    assert any(word in all_text for word in chinese_words)
    assert any(word in all_text for word in english_words)


def test_contains_html_emoji_invisible_characters_and_stray_whitespace(tickets):
    bodies = tickets["body"].dropna()
    for marker in ("<p>", "<br>", "&amp;", "<script>"):
        assert bodies.str.contains(marker, regex=False).any(), marker
    assert bodies.str.contains("[\U0001f300-\U0001faff]").any()
    assert bodies.str.contains("[\U00020000-\U0002ffff]").any()  # rare CJK beyond the BMP
    assert bodies.str.contains("[\x00\x07\x1b\u200b\ufeff\u202e]").any()
    assert bodies.str.contains("  |\n\n|\t").any()


def test_about_three_percent_of_rows_re_export_a_record_with_later_edits(tickets):
    keyed = tickets.dropna(subset=["id"])
    repeated = keyed[keyed["id"].duplicated(keep=False)].sort_values(["id", "updated_at"])
    assert 0.025 < keyed["id"].duplicated().mean() < 0.035
    for _, versions in repeated.groupby("id"):
        assert versions["updated_at"].is_monotonic_increasing and versions["updated_at"].is_unique
        assert versions["body"].nunique() == len(versions)


def test_about_one_percent_of_rows_are_unusable(tickets):
    no_id = tickets["id"].isna()
    blank = tickets["subject"].eq("") & tickets["body"].str.strip().eq("")
    html_only = tickets["subject"].eq("<p>&nbsp;</p>") & tickets["body"].str.startswith("<div><br/></div>")
    no_body = tickets["subject"].eq("") & tickets["body"].isna()
    assert no_id.any() and blank.any() and html_only.any() and no_body.any()
    assert 0.008 < (no_id | blank | html_only | no_body).mean() < 0.012


def test_a_few_bodies_are_longer_than_4000_characters(tickets):
    long_bodies = tickets["body"].str.len() > 4000
    assert 1 <= long_bodies.sum() <= 20


def test_about_fifteen_percent_of_bodies_carry_pii(tickets):
    masker = PiiMasker()
    readable_bodies = [unicodedata.normalize("NFKC", html.unescape(body)) for body in tickets["body"].dropna()]
    with_pii = [bool(masker.find(body)) for body in readable_bodies]
    assert 0.12 < sum(with_pii) / len(with_pii) < 0.2


def test_planted_pii_values_are_reported_for_every_kind(tickets):
    planted = pii_values_in(tickets)
    for kind, values in PII_SAMPLES.items():
        assert planted & set(values), kind
    readable = unicodedata.normalize("NFKC", html.unescape("\n".join(texts(tickets))))
    assert all(value in readable for value in planted)


@pytest.mark.parametrize("hiding", ["&#64;", "[０-９]{11}"])
def test_pii_hidden_behind_entities_or_full_width_digits_is_reported(tickets, hiding):
    hiding_rows = tickets[tickets["body"].str.contains(hiding, na=False)]
    planted = pii_values_in(hiding_rows)
    assert planted
    assert not [value for value in planted if value in "\n".join(texts(hiding_rows))]


def test_no_pii_is_reported_for_tickets_without_it():
    clean = pd.DataFrame({"subject": ["退款"], "body": ["订单DD313617600133还没发货"]})
    assert pii_values_in(clean) == set()


def test_tickets_round_trip_through_sqlite(tmp_path, tickets):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    create_source_table(engine, "tickets")
    assert insert_tickets(engine, "tickets", tickets, batch_size=700) == len(tickets)

    loaded = pd.read_sql_table("tickets", engine).astype({"id": "Int64"})
    pd.testing.assert_frame_equal(loaded, tickets, check_dtype=False)
    assert loaded["body"].isna().sum() == tickets["body"].isna().sum()
    assert [index["column_names"] for index in sa.inspect(engine).get_indexes("tickets")] == [["created_at"]]


def test_creating_the_source_table_again_empties_it(tmp_path, tickets):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    create_source_table(engine)
    insert_tickets(engine, "tickets", tickets.head(10))
    create_source_table(engine)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT COUNT(*) FROM tickets")).scalar_one() == 0


def test_mysql_table_uses_longtext_microsecond_datetimes_and_utf8mb4():
    ddl = str(CreateTable(tickets_table(sa.MetaData())).compile(dialect=mysql.dialect()))
    assert "body LONGTEXT" in ddl
    assert "created_at DATETIME(6)" in ddl
    assert "id BIGINT" in ddl and "subject VARCHAR(500)" in ddl
    assert "CHARSET=utf8mb4" in ddl


def test_distinct_texts_give_every_record_its_own_inputs_and_leave_the_rest_as_it_was():
    day = datetime.date(2024, 6, 15)
    plain = generate_tickets(day, count=3000, seed=4)
    distinct = generate_tickets(day, count=3000, seed=4, distinct_texts=True)
    pd.testing.assert_frame_equal(plain.drop(columns="body"), distinct.drop(columns="body"))
    assert plain["body"].duplicated().sum() > 100
    records = distinct.dropna(subset=["id"]).drop_duplicates("id", keep="last")
    texts = records[records["body"].fillna("").str.contains("(ref ", regex=False)]  # not the unusable rows
    assert len(texts) > 0.97 * len(records)
    assert not (texts["subject"] + "\n" + texts["body"]).duplicated().any()
