"""What model calls cost: US dollars per million tokens, per model, and the cost of a call.

Checked on 2026-12-07 against Anthropic's pricing page
(https://platform.claude.com/docs/en/about-claude/pricing) and the models' overview pages;
prices change, so this table is the one place to update. ``cache_write`` is the price of a
5-minute prompt-cache write (1.25x input); a 1-hour write costs 2x input. A model that is not
here, or whose price depends on more than its token counts (Claude Haiku 5.5 charges by prompt
length), has no price: its cost is None, and its tokens are still counted.

A model id matches its entry exactly or with a date suffix (``claude-sonnet-4-5-20250929``),
never by a looser prefix: ``claude-opus-4-9`` must not be priced as ``claude-opus-4``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PER = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens: input, output, 5-minute cache write, cache read."""

    input: float
    output: float
    cache_write: float
    cache_read: float

    def cost(
        self,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        cache_1h_input_tokens: int = 0,
    ) -> float:
        """The USD cost of one call. ``cache_1h_input_tokens`` says how many of the
        ``cache_creation_input_tokens`` were 1-hour writes (the rest were 5-minute ones)."""
        hour = min(cache_1h_input_tokens, cache_creation_input_tokens)
        return (
            input_tokens * self.input
            + output_tokens * self.output
            + (cache_creation_input_tokens - hour) * self.cache_write
            + hour * self.input * 2
            + cache_read_input_tokens * self.cache_read
        ) / PER


_OPUS_4 = Price(15.0, 75.0, 18.75, 1.50)
_OPUS_45 = Price(5.0, 25.0, 6.25, 0.50)
_SONNET_4 = Price(3.0, 15.0, 3.75, 0.30)
_SONNET_5 = Price(2.0, 10.0, 2.50, 0.20)

PRICES: dict[str, Price] = {
    "claude-fable-5-1": Price(10.0, 50.0, 12.50, 0.25),
    "claude-fable-5": Price(10.0, 50.0, 12.50, 1.00),
    "claude-opus-5-5": Price(4.0, 20.0, 5.00, 0.20),
    "claude-opus-5": _OPUS_45,
    "claude-opus-4-8": _OPUS_45,
    "claude-opus-4-7": _OPUS_45,
    "claude-opus-4-6": _OPUS_45,
    "claude-opus-4-5": _OPUS_45,
    "claude-opus-4-1": _OPUS_4,
    "claude-opus-4-0": _OPUS_4,
    "claude-opus-4": _OPUS_4,
    "claude-3-opus": _OPUS_4,
    "claude-sonnet-5-5": Price(2.0, 10.0, 2.50, 0.10),  # cache reads cut on 2026-10-07
    "claude-sonnet-5": _SONNET_5,
    "claude-sonnet-4-6": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-sonnet-4-0": _SONNET_4,
    "claude-sonnet-4": _SONNET_4,
    "claude-3-7-sonnet": _SONNET_4,
    "claude-haiku-4-5": Price(1.0, 5.0, 1.25, 0.10),
    "claude-3-5-haiku": Price(0.80, 4.0, 1.00, 0.08),
    "claude-3-haiku": Price(0.25, 1.25, 0.30, 0.03),
}
"""Every priced model, by its id without a date suffix."""

_DATED = re.compile(r"^(?P<base>.+?)-(?:\d{8}|latest)$")


def price_of(model: str | None) -> Price | None:
    """The price of ``model``, or None when it has none here."""
    if not model:
        return None
    if model in PRICES:
        return PRICES[model]
    dated = _DATED.match(model)
    return PRICES.get(dated.group("base")) if dated else None
