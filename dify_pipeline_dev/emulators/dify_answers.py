"""What the emulated Dify apps answer: a deterministic enrichment of a ticket or of a product review, and its
token usage."""

from __future__ import annotations

import json
from decimal import Decimal

from dify_pipeline.contract import DEFAULT_INPUT_MAPPING

# First rule whose keyword occurs in the ticket wins; order puts the specific before the generic.
CATEGORY_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("退款申请", ("退款", "退货", "refund", "money back")),
    ("订单修改", ("修改订单", "修改地址", "改地址", "change order", "change my order", "address")),
    ("物流问题", ("快递", "物流", "发货", "配送", "delivery", "shipping", "shipment", "tracking", "courier")),
    ("支付问题", ("支付", "付款", "扣款", "payment", "charged", "invoice")),
    ("账户问题", ("密码", "登录", "账号", "账户", "account", "login", "log in", "password")),
    ("售后维修", ("维修", "保修", "repair", "warranty")),
    ("产品质量", ("质量", "破损", "坏了", "broken", "defect", "damaged")),
    ("技术故障", ("崩溃", "闪退", "报错", "bug", "error", "crash")),
    ("功能建议", ("建议", "希望增加", "suggest", "feature", "would be nice")),
)
FALLBACK_CATEGORY = "其他"
NEGATIVE_CUES = ("失望", "生气", "愤怒", "投诉", "糟糕", "太慢", "不满", "很差", "太差", "差评",
                 "angry", "terrible", "awful", "worst", "disappointed", "unacceptable", "frustrated", "horrible")
POSITIVE_CUES = ("谢谢", "感谢", "满意", "很好", "喜欢", "thanks", "thank you", "great", "love", "happy",
                 "appreciate", "excellent")
SUMMARY_CHARS = 60

# What the `bad_output` and `invalid_category` faults make the app answer.
BAD_OUTPUT_TEXT = '{"category": "物流问题", "summary": "包裹'  # cut off mid-string, as a model hitting max tokens
INVALID_CATEGORY = "未知分类"

# Prices as a real model quotes them (see the Usage schema): price = tokens * unit_price * price_unit.
PROMPT_UNIT_PRICE = Decimal("0.001")
COMPLETION_UNIT_PRICE = Decimal("0.002")
PRICE_UNIT = Decimal("0.001")
PRICE_PLACES = Decimal("0.0000001")


def ticket_text(inputs: dict) -> str:
    """The ticket text the app reads: the contract's variables in order (then a chat app's `query`), else every
    string input by name."""
    parts = [inputs[name] for name in (*DEFAULT_INPUT_MAPPING, "query") if isinstance(inputs.get(name), str)]
    if not parts:
        parts = [value for _, value in sorted(inputs.items()) if isinstance(value, str)]
    return " ".join(" ".join(parts).split())


def answer_for(inputs: dict) -> dict:
    """The deterministic {"category", "summary", "sentiment"} the emulated app gives for these inputs."""
    text = ticket_text(inputs)
    lowered = text.lower()
    category = next(
        (label for label, keywords in CATEGORY_RULES if any(keyword in lowered for keyword in keywords)),
        FALLBACK_CATEGORY,
    )
    mood = sum(cue in lowered for cue in POSITIVE_CUES) - sum(cue in lowered for cue in NEGATIVE_CUES)
    sentiment = "positive" if mood > 0 else "negative" if mood < 0 else "neutral"
    return {"category": category, "summary": text[:SUMMARY_CHARS], "sentiment": sentiment}


def answer_json(answer: dict) -> str:
    """The answer as the JSON text an LLM node or a completion app returns."""
    return json.dumps(answer, ensure_ascii=False)


# The review app: aspects in the order they are listed, each found by its keywords.
REVIEW_ASPECTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("price", ("price", "expensive", "cheap", "value", "价格", "贵", "便宜")),
    ("quality", ("quality", "broke", "broken", "sturdy", "flimsy", "质量", "做工")),
    ("delivery", ("delivery", "shipping", "arrived", "package", "快递", "物流", "发货")),
    ("battery", ("battery", "charge", "charging", "电池", "续航")),
    ("size", ("size", "fit", "small", "large", "尺寸", "大小")),
    ("service", ("service", "support", "seller", "客服", "服务")),
)
REVIEW_POSITIVE_CUES = (*POSITIVE_CUES, "recommend", "perfect", "good", "works well", "推荐", "好用", "不错")
REVIEW_NEGATIVE_CUES = (*NEGATIVE_CUES, "return", "waste", "bad", "poor", "useless", "退货", "难用", "垃圾")
INVALID_SENTIMENT = "mixed"  # what `invalid_category` makes the review app answer: outside its labels


def review_text(inputs: dict) -> str:
    """The review the app reads: its title, then its text."""
    return " ".join(" ".join(str(inputs.get(name) or "") for name in ("title", "review")).split())


def review_answer(inputs: dict) -> dict:
    """The deterministic {"sentiment", "score" (1-5), "aspects"} of a product review."""
    lowered = review_text(inputs).lower()
    mood = (sum(cue in lowered for cue in REVIEW_POSITIVE_CUES)
            - sum(cue in lowered for cue in REVIEW_NEGATIVE_CUES))
    score = max(1, min(5, 3 + mood))
    sentiment = "positive" if score >= 4 else "negative" if score <= 2 else "neutral"
    aspects = [name for name, keywords in REVIEW_ASPECTS if any(keyword in lowered for keyword in keywords)]
    return {"sentiment": sentiment, "score": score, "aspects": aspects}


def app_text(answers: str, inputs: dict) -> str:
    """The text an app of this kind reads (its prompt grows with it)."""
    return review_text(inputs) if answers == "reviews" else ticket_text(inputs)


def faulty_answer(inputs: dict, fault: str | None, answers: str = "tickets") -> dict | str:
    """The app's answer, broken as the fault asks: a dict when well formed, else the unparseable text."""
    if fault == "bad_output":
        return BAD_OUTPUT_TEXT
    if answers == "reviews":
        answer = review_answer(inputs)
        if fault == "invalid_category":
            answer["sentiment"] = INVALID_SENTIMENT
        return answer
    answer = answer_for(inputs)
    if fault == "invalid_category":
        answer["category"] = INVALID_CATEGORY
    return answer


def workflow_outputs(answer: dict | str, output_style: str) -> dict:
    """A workflow app's `outputs`: the three fields as an object, or one `result` holding their JSON text."""
    if output_style == "json_string":
        return {"result": answer if isinstance(answer, str) else answer_json(answer)}
    return dict(answer) if isinstance(answer, dict) else {"text": answer}


def usage_for(prompt_text: str, answer_text: str, latency: float) -> dict:
    """Token usage in Dify's `Usage` shape; tokens grow with the text so the same ticket always costs the same."""
    prompt_tokens = 120 + len(prompt_text)
    completion_tokens = 10 + len(answer_text) // 2
    prompt_price = (prompt_tokens * PROMPT_UNIT_PRICE * PRICE_UNIT).quantize(PRICE_PLACES)
    completion_price = (completion_tokens * COMPLETION_UNIT_PRICE * PRICE_UNIT).quantize(PRICE_PLACES)
    return {
        "prompt_tokens": prompt_tokens,
        "prompt_unit_price": str(PROMPT_UNIT_PRICE),
        "prompt_price_unit": str(PRICE_UNIT),
        "prompt_price": str(prompt_price),
        "completion_tokens": completion_tokens,
        "completion_unit_price": str(COMPLETION_UNIT_PRICE),
        "completion_price_unit": str(PRICE_UNIT),
        "completion_price": str(completion_price),
        "total_tokens": prompt_tokens + completion_tokens,
        "total_price": str(prompt_price + completion_price),
        "currency": "USD",
        "latency": latency,
    }
