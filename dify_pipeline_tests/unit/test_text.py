import pytest

from dify_pipeline.clean.text import normalize_text, truncate_text


def test_none_becomes_empty_text():
    assert normalize_text(None) == ""


def test_html_tags_are_removed_and_script_and_style_contents_dropped():
    html = "<p>包裹没收到</p><script>alert('x')</script><style>p { color: red }</style><p>请查一下</p>"
    assert normalize_text(html) == "包裹没收到 请查一下"


def test_html_entities_are_unescaped():
    assert normalize_text("AT&amp;T&nbsp;&lt;VIP&gt; zhang&#64;qq.com") == "AT&T <VIP> zhang@qq.com"


def test_line_break_and_block_tags_separate_words_but_inline_tags_do_not():
    assert normalize_text("first<br>second<p>third</p>") == "first second third"
    assert normalize_text("zhang<b>@</b>qq.com") == "zhang@qq.com"


def test_text_in_angle_brackets_that_is_not_a_tag_is_kept():
    assert normalize_text("Zhang Wei <zhang.wei@qq.com> wrote: price < 100") == (
        "Zhang Wei <zhang.wei@qq.com> wrote: price < 100"
    )


def test_full_width_characters_are_folded_by_nfkc():
    assert normalize_text("ＶＩＰ会员１３８，急！") == "VIP会员138,急!"


def test_control_and_format_characters_are_removed():
    text = "退\x00款\x07申\u200b请\ufeff\u202e\x1b"
    assert normalize_text(text) == "退款申请"


def test_lone_surrogates_are_removed():
    assert normalize_text("ab\ud800c\udfff") == "abc"


def test_entity_encoded_invisible_characters_are_removed():
    assert normalize_text("138&#8203;0013&#xFEFF;8000") == "13800138000"


def test_newlines_and_tabs_become_spaces_and_whitespace_collapses():
    assert normalize_text("  Where\r\nis\tmy \n\n order\u3000\xa0now?  ") == "Where is my order now?"


def test_bytes_are_decoded_as_utf8():
    assert normalize_text("快递没到 😡".encode()) == "快递没到 😡"


def test_bytes_that_are_not_utf8_are_decoded_as_gb18030():
    assert normalize_text("申请退款，谢谢".encode("gb18030")) == "申请退款,谢谢"


def test_undecodable_bytes_become_replacement_characters():
    assert normalize_text(b"ok \xff\xfe") == "ok \ufffd\ufffd"


def test_emoji_and_rare_cjk_from_supplementary_planes_are_kept():
    text = "我姓𠮷，名𪚥 👍📦 😭"
    assert normalize_text(text) == "我姓𠮷,名𪚥 👍📦 😭"


def test_short_text_is_not_truncated():
    assert truncate_text("退款", 5) == ("退款", False)
    assert truncate_text("exactly", 7) == ("exactly", False)


def test_long_text_is_cut_at_max_code_points():
    assert truncate_text("𠮷𪚥abcdef", 4) == ("𠮷𪚥ab", True)


def test_truncation_does_not_split_a_combining_sequence():
    # "e" + COMBINING ACUTE ACCENT would lose its accent if cut between the two code points.
    assert truncate_text("cafe\u0301s", 4) == ("caf", True)
    assert truncate_text("ok👍\U0001f3fdyes", 3) == ("ok", True)


def test_truncation_drops_whitespace_left_at_the_cut():
    assert truncate_text("hello world", 6) == ("hello", True)


def test_truncation_needs_a_positive_limit():
    with pytest.raises(ValueError, match="max_chars"):
        truncate_text("text", 0)
