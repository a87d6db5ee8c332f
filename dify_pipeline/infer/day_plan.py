"""What a day sends and how its answers are judged, decided without Dify or a database: the distinct inputs the
cache does not hold, the cached answers of another app version that the contract asks again, and each shard's
outcomes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from dify_pipeline.contract import OutputField
from dify_pipeline.infer.enrichment import NOT_ANSWERED, Outcome, RecordPlan, judge, refused_inputs_outcome
from dify_pipeline.resources.day_versions import DayVersions
from dify_pipeline.resources.dify import AnswerDecision, DifyResult, decide_cached_answer
from dify_pipeline.resources.dify.versions import OtherVersionAnswers


@dataclass
class DayInputs:
    """The first pass over a day, one shard at a time: each distinct input once, either never answered (to send)
    or answered before, with the app version that answered it. `keep_answered` keeps the plans of the answered
    ones too (their inputs are needed when they may be asked again)."""

    keep_answered: bool = False
    records: int = 0
    unanswered: dict[str, RecordPlan] = field(default_factory=dict)  # cache key → plan
    answered: dict[str, str | None] = field(default_factory=dict)  # cache key → workflow_id of the stored answer
    answered_plans: dict[str, RecordPlan] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def new_inputs(self, plans: Iterable[RecordPlan]) -> dict[str, RecordPlan]:
        """The plans among `plans` whose inputs this day has not met yet (refused ones left out)."""
        new: dict[str, RecordPlan] = {}
        for plan in plans:
            if not plan.input_problem and plan.cache_key not in self._seen:
                new.setdefault(plan.cache_key, plan)
        return new

    def add(self, plans: list[RecordPlan], stored: Mapping[str, str | None]) -> None:
        """One shard's `plans`, with `stored`: which of its new inputs the cache holds, by the version that answered
        (`ResultCacheSession.workflow_ids(new_inputs(plans))`)."""
        new = self.new_inputs(plans)
        self.records += len(plans)
        self._seen.update(plan.cache_key for plan in plans)
        for key, plan in new.items():
            if key in stored:
                self.answered[key] = stored[key]
                if self.keep_answered:
                    self.answered_plans[key] = plan
            else:
                self.unanswered[key] = plan

    @property
    def distinct(self) -> int:
        return len(self._seen)

    def to_ask_again(self, policy: OtherVersionAnswers, pinned: str | None) -> dict[str, RecordPlan]:
        """The answered inputs the day's `pinned` version must answer again (the contract's policy)."""
        return {key: self.answered_plans[key] for key, workflow_id in self.answered.items()
                if decide_cached_answer(policy, pinned, workflow_id) is AnswerDecision.REASK}


class DayPin:
    """The published app version a day is pinned to: kept in the result cache's database (`versions`), so every
    run of the day and of a backfill uses it, or, with the cache off (`versions` None), for this run only."""

    def __init__(self, versions: DayVersions | None, enrichment: str, day: date, app_identity: str,
                 cache_version: str) -> None:
        self._versions = versions
        self._day = dict(enrichment=enrichment, day=day, app_identity=app_identity)
        self._cache_version = cache_version
        self.workflow_id = versions.pinned(**self._day, cache_version=cache_version) if versions else None

    def pin(self, workflow_id: str) -> str:
        """Pin the day to `workflow_id` (the version that answered its first record) unless it is pinned already;
        returns the version it is pinned to. DifyResource.run_all calls it, from a worker thread."""
        if self._versions is None:
            self.workflow_id = self.workflow_id or workflow_id
        else:
            self.workflow_id = self._versions.pin(**self._day, workflow_id=workflow_id,
                                                  cache_version=self._cache_version)
        return self.workflow_id

    def pin_answered(self, answered: Mapping[str, str | None]) -> str | None:
        """Pin a day whose records were all answered before to the version of most of those answers (nothing is
        sent to find one); None when no answer names its version."""
        workflow_id = version_of_most_answers(answered)
        return self.pin(workflow_id) if workflow_id else None


def version_of_most_answers(answered: Mapping[str, str | None]) -> str | None:
    """The app version that gave most of `answered` (None when none is known): the cheapest version to pin a day
    whose records were all answered before, by several versions, when other versions' answers are asked again."""
    counts = Counter(workflow_id for workflow_id in answered.values() if workflow_id)
    return counts.most_common(1)[0][0] if counts else None


def judge_shard(plans: list[RecordPlan], stored: Mapping[str, DifyResult], this_run: Mapping[str, Outcome],
                sent: set[str], fields: Mapping[str, OutputField]) -> dict[str, Outcome]:
    """The outcome of each distinct input of a shard: refused inputs, this run's outcomes the cache does not hold
    (`this_run`: failed runs; every answer when the cache is off), and each `stored` answer judged against the
    contract's `fields` now (a contract failure stored earlier is judged again, free); `sent` are the inputs this
    run asked, the others came from the cache."""
    outcomes: dict[str, Outcome] = {}
    for plan in plans:
        key = plan.cache_key
        if key in outcomes:
            continue
        if plan.input_problem:
            outcomes[key] = refused_inputs_outcome(plan)
        elif key in this_run:
            outcomes[key] = this_run[key]
        elif key in stored:
            outcomes[key] = judge(stored[key], fields, from_cache=key not in sent)
        else:  # the run stopped before it was answered
            outcomes[key] = NOT_ANSWERED
    return outcomes
