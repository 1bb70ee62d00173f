"""What a model call cost in US dollars, from a small dated price table.

Only models whose price is published are priced: OpenAI's, per million tokens, as OpenAI's pricing
page listed them on :data:`PRICES_AS_OF` (standard tier, not batch or flex). A model the table does
not know (the embedded model, an own server's model, an Azure deployment's own name) costs ``None``:
unknown, never zero. Cached input tokens are billed at the cached rate and counted inside the input
tokens; reasoning tokens are inside the output tokens, as the API reports them.

Maintaining it: when OpenAI changes a price or adds a model, edit :data:`PRICES` and
:data:`PRICES_AS_OF` together; ``tests/llm/test_costs.py`` pins a few rows so a typo shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: When the rows below were last checked against OpenAI's pricing page.
PRICES_AS_OF = "2025-08-07"


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    cached_input: float
    output: float


PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "o3": Price(2.00, 0.50, 8.00),
    "o3-mini": Price(1.10, 0.55, 4.40),
    "o4-mini": Price(1.10, 0.275, 4.40),
}

# A dated snapshot name is priced as its model: gpt-4o-mini-2024-07-18 is gpt-4o-mini.
_SNAPSHOT = re.compile(r"^(?P<model>.+?)-\d{4}-\d{2}-\d{2}$")


def price_of(model: str | None) -> Price | None:
    """The table's price of ``model`` or of the model a dated snapshot name belongs to; None if unknown."""
    if not model:
        return None
    name = model.strip().lower()
    if name in PRICES:
        return PRICES[name]
    match = _SNAPSHOT.match(name)
    return PRICES.get(match["model"]) if match else None


def call_cost(*, model: str, resolved_model: str | None, input_tokens: int, output_tokens: int,
              cached_tokens: int = 0) -> float | None:
    """Dollars for one call's tokens: priced by the model that answered when the table knows it, else by
    the model asked for; None when neither is in the table."""
    price = price_of(resolved_model) or price_of(model)
    if price is None:
        return None
    cached = min(max(cached_tokens, 0), max(input_tokens, 0))
    dollars = ((input_tokens - cached) * price.input + cached * price.cached_input
               + output_tokens * price.output) / 1_000_000
    return round(dollars, 8)
