"""The token rules of one reply, each in one place: the input estimate the reservation is
made from, the running output count that stops a budget-capped reply, and the usage that is
billed at the end (a billing.usage.Usage)."""

from __future__ import annotations

import math

from django.conf import settings

from billing.tokens import (
    calculate_message_tokens,
    count_system_prompt_tokens,
    count_text_tokens_with_source,
    estimate_tokens,
)
from billing.usage import TokenSource, Usage
from chat.llm.base import Turn


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


def from_provider(usage: Usage, reply_text: str) -> Usage:
    """The provider's report, as billed (thinking tokens are output). When the report has no
    output count (proto3 JSON omits a zero candidatesTokenCount) although text came, the
    output is our count of the reply and `source` names that count (COUNTED or
    ESTIMATED): such a reply is never billed as 0."""
    output, source = usage.output_tokens, TokenSource.PROVIDER
    if output == 0 and reply_text:
        output, source = count_text_tokens_with_source(reply_text)
    return Usage(usage.input_tokens, output + usage.thinking_tokens, source=source)


def usage_to_bill(
    *,
    provider_usage: Usage | None,
    produced_output: bool,
    message: str,
    reply_text: str,
    history: list[Turn],
) -> Usage | None:
    """The tokens consumed, from the best source there is; None when nothing was.

    1. the provider's usage report (exact, no extra call), 2. the count API (cached),
    3. the estimate: calculate_message_tokens picks 2 or 3 and says which.
    """
    if provider_usage is not None:
        return from_provider(provider_usage, reply_text)
    if not produced_output:
        return None  # failed before any output: the provider billed nothing
    return calculate_message_tokens(
        message, reply_text, history_texts=[turn.text for turn in history]
    )


def count_output(*, input_estimate: int, reply_text: str) -> Usage:
    """Our count of a run that ended without its exchange at hand (the sweep): the input as
    estimated when the reservation was made, the output estimated from the text kept."""
    return Usage(input_estimate, estimate_tokens(reply_text), source=TokenSource.ESTIMATED)
