"""Usage, modelled once: the tokens one exchange consumed and where the figures came from.

The providers report it (`TokenSource.PROVIDER`, chat/llm), billing counts or estimates it
when they did not (`COUNTED`, `ESTIMATED`: billing/tokens.py), the settle bills it
(billing/services.py::settle_reservation) and the reply's message and the ledger entry store
it (`Message.token_source` and `LedgerEntry.source` take TokenSource's choices).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models


class TokenSource(models.TextChoices):
    PROVIDER = "provider", "Provider usage report"
    COUNTED = "counted", "Count-tokens API"
    ESTIMATED = "estimated", "Estimate"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens consumed by one exchange. A provider's report keeps its thinking tokens apart;
    what is billed counts them as output (`billed()`)."""

    input_tokens: int
    output_tokens: int
    thinking_tokens: int = 0
    source: TokenSource = TokenSource.PROVIDER

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.thinking_tokens

    def billed(self) -> Usage:
        """The same usage as billed: thinking tokens are output."""
        if not self.thinking_tokens:
            return self
        return Usage(self.input_tokens, self.output_tokens + self.thinking_tokens, 0, self.source)

    def as_dict(self) -> dict:
        """The `usage` of a done event."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "source": self.source.value,
        }
