"""The token rules of one reply, each in one place: the input estimate the reservation is
made from, the running output count that stops a budget-capped reply, and the usage that is
billed at the end (one type for it, `Billed`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings

from billing.tokens import (
    calculate_message_tokens,
    count_system_prompt_tokens,
    count_text_tokens_with_source,
    estimate_tokens,
)
from chat.llm.base import Turn, Usage


@dataclass(frozen=True, slots=True)
class Billed:
    """What one exchange is billed: input, output, and where the figures came from
    (`provider`: its usage report; `counted`: the count API; `estimated`: our estimate)."""

    input_tokens: int
    output_tokens: int
    source: str

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "source": self.source,
        }


NOTHING_BILLED = Billed(0, 0, "")


def system_prompt_tokens() -> int:
    """The system prompt's count (cached per model); called before any transaction."""
    return count_system_prompt_tokens()


def estimate_input_tokens(*, system_tokens: int, history: list[Turn], text: str) -> int:
    """What the provider will bill as input: system prompt + history + message + overhead."""
    return (
        system_tokens
        + sum(estimate_tokens(turn.text) for turn in history)
        + estimate_tokens(text)
        + settings.TOKEN_OVERHEAD
    )


class OutputCount:
    """The running count of a reply's output: ceil(chars / 4), the estimate's base, so no
    count call and no database work per chunk. The provider was asked for at most `cap`
    tokens; this stops a reply when the budget is spent even if the provider overruns it."""

    def __init__(self, cap: int, *, enforced: bool):
        self.cap = cap
        self.enforced = enforced  # only a cap the budget imposed is ours to enforce
        self.chars = 0

    def add(self, text: str) -> None:
        self.chars += len(text)

    @property
    def passes_cap(self) -> bool:
        return self.enforced and math.ceil(self.chars / 4) > self.cap


def from_provider(usage: Usage, reply_text: str) -> Billed:
    """The provider's report. Thinking tokens are billed as output. When the report has no
    output count (proto3 JSON omits a zero candidatesTokenCount) although text came, the
    output is our count of the reply and `source` names that count ("counted" or
    "estimated"): such a reply is never billed as 0."""
    output, source = usage.output_tokens, "provider"
    if output == 0 and reply_text:
        output, source = count_text_tokens_with_source(reply_text)
    return Billed(usage.input_tokens, output + usage.thinking_tokens, source)


def usage_to_bill(
    *,
    provider_usage: Usage | None,
    produced_output: bool,
    message: str,
    reply_text: str,
    history: list[Turn],
) -> Billed | None:
    """The tokens consumed, from the best source there is; None when nothing was.

    1. the provider's usage report (exact, no extra call), 2. the count API (cached),
    3. the estimate: calculate_message_tokens picks 2 or 3 and says which.
    """
    if provider_usage is not None:
        return from_provider(provider_usage, reply_text)
    if not produced_output:
        return None  # failed before any output: the provider billed nothing
    counted = calculate_message_tokens(
        message, reply_text, history_texts=[turn.text for turn in history]
    )
    return Billed(counted.input_tokens, counted.output_tokens, counted.source)


def count_output(*, input_estimate: int, reply_text: str) -> Billed:
    """Our count of a run that ended without its exchange at hand (the sweep): the input as
    estimated when the reservation was made, the output estimated from the text kept."""
    return Billed(input_estimate, estimate_tokens(reply_text), "estimated")
