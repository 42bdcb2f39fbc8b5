"""The usage one reply (or /v1 completion) is billed at its end, a billing.usage.Usage, from
the best source there is. The input estimate the reservation is made from and the running
output count that stops a budget-capped reply are billing's (billing/tokens.py:
estimate_input_tokens, OutputCount), one function each for every caller."""

from __future__ import annotations

from billing.tokens import (
    calculate_message_tokens,
    count_text_tokens_with_source,
    estimate_tokens,
)
from billing.usage import TokenSource, Usage
from chat.llm.base import Turn


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
