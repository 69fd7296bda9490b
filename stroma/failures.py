"""Failure classes, classifiers, retry policies and backoff.

Classification order: your classifiers, in list order, first non-None wins; then the built-in
rules (ContractViolation → TERMINAL, BudgetExceeded → RECOVERABLE, TimeoutError → RECOVERABLE,
ValueError → AMBIGUOUS, anything else → AMBIGUOUS).

Example::

    def rate_limits(exc: Exception, ctx: NodeContext) -> FailureClass | None:
        return FailureClass.RECOVERABLE if "429" in str(exc) else None

    runner = StromaRunner.quick().with_classifiers([rate_limits])
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import AliasChoices, ConfigDict, Field

from stroma._checked import CheckedModel
from stroma.contracts import ContractViolation
from stroma.errors import ConfigurationError, LeaseLostError, StoreUnavailableError

__all__ = [
    "Classifier",
    "FailureClass",
    "FailurePolicy",
    "NodeContext",
    "PolicyMap",
    "RetryBudget",
    "StepContext",
    "backoff_delay",
    "classify",
    "classify_with_reason",
    "default_policy_map",
    "may_retry",
]


class FailureClass(StrEnum):
    """How a failure should be handled."""

    RECOVERABLE = "RECOVERABLE"
    TERMINAL = "TERMINAL"
    AMBIGUOUS = "AMBIGUOUS"

    def __str__(self) -> str:
        return self.value


MAX_BACKOFF_S = 86_400.0
"""The largest ``backoff_seconds`` accepted (a day): a longer wait is a mistake, not a policy."""


class FailurePolicy(CheckedModel):
    """How many attempts a failure class gets, and the cap of the jittered backoff delay.

    As in the published 0.3.2 API, ``max_retries`` counts attempts in total: ``3`` means at most
    three calls; ``1`` and ``0`` both mean one call and no retry. ``max_attempts`` is accepted as
    a clearer name for the same number (``FailurePolicy(max_attempts=3)``). Bad values (negative,
    NaN, infinite, over a day of backoff) raise ConfigurationError.
    """

    model_config = ConfigDict(frozen=True)

    max_retries: int = Field(default=3, ge=0, validation_alias=AliasChoices("max_retries", "max_attempts"))
    backoff_seconds: float = Field(default=1.0, ge=0.0, le=MAX_BACKOFF_S, allow_inf_nan=False)

    @property
    def max_attempts(self) -> int:
        """Calls a node gets under this policy, the first included (at least one)."""
        return max(self.max_retries, 1)


PolicyMap = dict[FailureClass, FailurePolicy]


def default_policy_map() -> PolicyMap:
    """RECOVERABLE: 3 attempts, 1.0 s cap; TERMINAL: one attempt; AMBIGUOUS: one attempt
    (``max_retries=1``), 0.5 s cap. ``max_retries`` counts attempts in total, as in 0.3.2."""
    return {
        FailureClass.RECOVERABLE: FailurePolicy(max_retries=3, backoff_seconds=1.0),
        FailureClass.TERMINAL: FailurePolicy(max_retries=0, backoff_seconds=0.0),
        FailureClass.AMBIGUOUS: FailurePolicy(max_retries=1, backoff_seconds=0.5),
    }


def may_retry(attempts_made: int, policy: FailurePolicy | None) -> bool:
    """Whether attempt ``attempts_made + 1`` may run under ``policy`` (None: no retries).

    The one place the retry count is decided: ``max_retries`` is the number of attempts in total.
    """
    return policy is not None and attempts_made < policy.max_retries


@dataclass
class NodeContext:
    """What a classifier knows about the failing attempt. ``attempt`` is 1-based."""

    node_id: str
    attempt: int
    run_id: str


StepContext = NodeContext

Classifier = Callable[[Exception, NodeContext], "FailureClass | None"]


def _builtin(exc: BaseException) -> tuple[FailureClass, str]:
    # Imported here: cost imports nothing from failures, but keep the module graph acyclic.
    from stroma.cost import BudgetExceeded  # noqa: PLC0415

    if isinstance(exc, ContractViolation):
        return FailureClass.TERMINAL, "builtin:ContractViolation"
    if isinstance(exc, ConfigurationError):
        return FailureClass.TERMINAL, "builtin:ConfigurationError"
    if isinstance(exc, LeaseLostError):  # the run belongs to another worker now
        return FailureClass.TERMINAL, "builtin:LeaseLost"
    if isinstance(exc, BudgetExceeded):
        return FailureClass.RECOVERABLE, "builtin:BudgetExceeded"
    if isinstance(exc, TimeoutError):
        return FailureClass.RECOVERABLE, "builtin:TimeoutError"
    if isinstance(exc, StoreUnavailableError):
        return FailureClass.RECOVERABLE, "builtin:StoreUnavailable"
    if isinstance(exc, ValueError):
        return FailureClass.AMBIGUOUS, "builtin:ValueError"
    return FailureClass.AMBIGUOUS, "builtin:default"


def _name(classifier: object) -> str:
    return getattr(classifier, "__qualname__", None) or type(classifier).__qualname__


def classify_with_reason(
    exc: Exception, context: NodeContext, classifiers: Sequence[Classifier] | None = None
) -> tuple[FailureClass, str]:
    """Like :func:`classify`, also naming the classifier or built-in rule that decided.

    A classifier that raises is skipped (its error is reported as ``decided_by`` of the rule
    that then decided, suffixed ``after <name> raised``), so a buggy classifier never breaks a run.
    """
    broken: list[str] = []
    for classifier in classifiers or ():
        try:
            result = classifier(exc, context)
        except Exception:  # a classifier bug must not turn into a crash of the run
            broken.append(_name(classifier))
            continue
        if result is not None:
            return FailureClass(result), _name(classifier)
    failure_class, rule = _builtin(exc)
    if broken:
        rule += f" after {', '.join(broken)} raised"
    return failure_class, rule


def classify(
    exc: Exception, context: NodeContext, classifiers: Sequence[Classifier] | None = None
) -> FailureClass:
    """Custom classifiers first (first non-None wins), then the built-in rules."""
    return classify_with_reason(exc, context, classifiers)[0]


class RetryBudget:
    """Counts attempts per (run_id, node_id).

    Example (published semantics: ``max_retries`` is the number of attempts in total)::

        budget = RetryBudget()
        budget.increment("run", "fetch")
        budget.increment("run", "fetch")
        budget.exhausted("run", "fetch", FailurePolicy(max_retries=2))  # True
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}

    def increment(self, run_id: str, node_id: str) -> int:
        """Count one more attempt; returns the new count."""
        key = (run_id, node_id)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count

    def count(self, run_id: str, node_id: str) -> int:
        """Attempts counted so far."""
        return self._counts.get((run_id, node_id), 0)

    def exhausted(self, run_id: str, node_id: str, policy: FailurePolicy) -> bool:
        """True once the count reaches ``policy.max_retries`` (no further attempt may run)."""
        return not may_retry(self._counts.get((run_id, node_id), 0), policy)

    def reset(self, run_id: str, node_id: str) -> None:
        """Forget the count of one node."""
        self._counts.pop((run_id, node_id), None)


def backoff_delay(retry: int, policy: FailurePolicy, rng: random.Random) -> float:
    """Full-jitter exponential backoff for the ``retry``-th retry (1-based).

    The ceiling doubles with each retry and reaches ``policy.backoff_seconds`` at the last retry
    the policy allows, ``max_retries - 1`` (so the cap is the policy's, and earlier retries wait
    less): ``uniform(0, cap * 2 ** (retry - last_retry))``.
    """
    cap = policy.backoff_seconds
    if cap <= 0:
        return 0.0
    exponent = min(0, retry - max(policy.max_retries - 1, 1))
    ceiling = cap * (2.0**exponent)
    return rng.uniform(0.0, ceiling)
