"""The default contract between the pipeline and the Dify app: what goes in, what must come out."""

from __future__ import annotations

# The app's input variables and the cleaned columns that feed them.
DEFAULT_INPUT_MAPPING: dict[str, str] = {"subject": "subject", "body": "body"}

# The ten support categories an app may answer; anything else is a permanent `invalid_category` error.
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "物流问题",  # logistics
    "退款申请",  # refund request
    "功能建议",  # feature suggestion
    "账户问题",  # account issue
    "支付问题",  # payment issue
    "产品质量",  # product quality
    "售后维修",  # after-sales repair
    "订单修改",  # order change
    "技术故障",  # technical fault
    "其他",  # other
)

SENTIMENTS: tuple[str, ...] = ("positive", "neutral", "negative")
