"""What a day sends and how its answers are judged, decided without Dify or a database: the distinct inputs the
cache does not hold, the cached answers of another app version that the contract asks again, and each shard's
outcomes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Mapping
from datetime import date

import numpy as np

from dify_pipeline.contract import OutputField
from dify_pipeline.infer.enrichment import NOT_ANSWERED, Outcome, RecordPlan, judge, refused_inputs_outcome
from dify_pipeline.infer.key_digests import KeyDigests, digests
from dify_pipeline.resources.day_versions import DayVersions
from dify_pipeline.resources.dify import AnswerDecision, DifyResult, decide_cached_answer
from dify_pipeline.resources.dify.versions import OtherVersionAnswers


class DayInputs:
    """The first pass over a day, one shard at a time: each distinct input once, either never answered (to send)
    or answered before, with the app version that answered it. Only digests of the keys are kept, never the
    inputs (`infer.key_digests`): the sending pass reads the shards again for them."""

    def __init__(self) -> None:
        self.records = self.distinct = 0
        self._seen: KeyDigests | None = KeyDigests()
        self._unanswered: list[np.ndarray] = []  # per shard, the digests of its new inputs not answered before
        self._answered: list[np.ndarray] = []  # … of those answered before
        self._answered_versions: list[np.ndarray] = []  # … and the index in `_versions` of each one's version
        self._versions: dict[str | None, int] = {}

    def new_inputs(self, plans: Iterable[RecordPlan]) -> dict[str, RecordPlan]:
        """The plans among `plans` whose inputs this day has not met yet (refused ones left out)."""
        candidates: dict[str, RecordPlan] = {}
        for plan in plans:
            if not plan.input_problem:
                candidates.setdefault(plan.cache_key, plan)
        met = self._seen.contains(digests(candidates))
        return {key: plan for (key, plan), old in zip(candidates.items(), met.tolist()) if not old}

    def add(self, plans: list[RecordPlan], stored: Mapping[str, str | None]) -> None:
        """One shard's `plans`, with `stored`: which of its new inputs the cache holds, by the version that answered
        (`ResultCacheSession.workflow_ids(new_inputs(plans))`)."""
        if self._seen is None:
            raise RuntimeError("the first pass is finished: it takes no more shards")
        new = list(self.new_inputs(plans))
        self.records += len(plans)
        self._seen.add(digests(plan.cache_key for plan in plans))
        self.distinct = len(self._seen)
        answered = [key for key in new if key in stored]
        self._unanswered.append(digests(key for key in new if key not in stored))
        self._answered.append(digests(answered))
        self._answered_versions.append(np.array(
            [self._versions.setdefault(stored[key], len(self._versions)) for key in answered], dtype=np.int32))

    def finish(self) -> KeyDigests:
        """The end of the pass: the distinct inputs no earlier run or day answered. The pass's other digests (every
        input met, per shard) are dropped, so they do not stay beside these while the day is sent; what was answered
        before, and by which version, is kept."""
        unanswered = np.concatenate([np.empty(0, np.uint64), *self._unanswered])
        self._seen, self._unanswered = None, []
        unanswered.sort()
        return KeyDigests(unanswered)

    @property
    def answered_count(self) -> int:
        return sum(len(shard) for shard in self._answered)

    def answered_versions(self) -> Counter:
        """How many inputs answered before each app version (None: not known) answered."""
        counts = np.bincount(np.concatenate([np.empty(0, np.int32), *self._answered_versions]),
                             minlength=len(self._versions))
        return Counter({version: int(counts[index]) for version, index in self._versions.items() if counts[index]})

    def to_ask_again(self, policy: OtherVersionAnswers, pinned: str | None) -> KeyDigests:
        """The answered inputs the day's `pinned` version must answer again (the contract's policy)."""
        reask = np.array([decide_cached_answer(policy, pinned, version) is AnswerDecision.REASK
                          for version in self._versions] or [False], dtype=bool)
        chosen = [shard[reask[versions]] for shard, versions in zip(self._answered, self._answered_versions)]
        return KeyDigests(np.unique(np.concatenate([np.empty(0, np.uint64), *chosen])))


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

    def pin_answered(self, answered: Counter) -> str | None:
        """Pin a day whose records were all answered before to the version of most of those answers (nothing is
        sent to find one; `answered`: how many each version gave); None when no answer names its version."""
        workflow_id = version_of_most_answers(answered)
        return self.pin(workflow_id) if workflow_id else None


def version_of_most_answers(answered: Counter) -> str | None:
    """The app version that gave most answers (`answered`: how many each gave; None when none is known): the
    cheapest version to pin a day whose records were all answered before, by several versions, when other
    versions' answers are asked again."""
    counts = Counter({workflow_id: count for workflow_id, count in answered.items() if workflow_id})
    return counts.most_common(1)[0][0] if counts else None


def judge_shard(plans: list[RecordPlan], stored: Mapping[str, DifyResult], this_run: Mapping[str, Outcome],
                sent: Container[str], fields: Mapping[str, OutputField]) -> dict[str, Outcome]:
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
