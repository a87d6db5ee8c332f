"""Which cached answers a day pinned to one published workflow version may use."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

OtherVersionAnswers = Literal["reuse", "reask"]


class AnswerDecision(StrEnum):
    USE = "use"
    REASK = "reask"


def decide_cached_answer(policy: OtherVersionAnswers, pinned_workflow_id: str | None,
                         answer_workflow_id: str | None) -> AnswerDecision:
    """Use a cached answer, or ask the pinned version again (paid), as the contract's `other_version_answers` says.

    Nothing pinned (pinning off, or a completion/chat app) uses every answer. An answer of the pinned version is
    always used; one of another version, or of an unknown one (no workflow_id stored), is used under "reuse" and
    asked again under "reask".
    """
    if pinned_workflow_id is None or answer_workflow_id == pinned_workflow_id:
        return AnswerDecision.USE
    return AnswerDecision.USE if policy == "reuse" else AnswerDecision.REASK
