"""Plain-text tables for the command line (no Textual, no rich: the daemon path stays light)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, a header and a rule; empty tables say so."""
    if not rows:
        return "(none)"
    cells = [[cell_text(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def cell_text(value: Any, limit: int = 60) -> str:
    """One line of text for a cell, cut at ``limit`` characters with an ellipsis."""
    text = "-" if value is None else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(ts: float | None) -> str:
    """A timestamp as local-free ISO time (UTC), or '-'."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(ts: float | None, now: float) -> str:
    """How long ago, compactly: 4s, 3m, 2h, 5d."""
    if ts is None:
        return "-"
    secs = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit}"
    return f"{secs:.0f}s"


def spent(total: Any) -> str:
    """What a usage total spent, compactly: ``$0.42 12k`` (USD, then input + output tokens),
    ``+?`` after the cost when some attempts had none, ``-`` when nothing was recorded."""
    if total is None or not total.attempts:
        return "-"
    tokens = total.input_tokens + total.output_tokens
    count = (
        f"{tokens / 1e6:.1f}M"
        if tokens >= 1_000_000
        else f"{tokens / 1e3:.0f}k"
        if tokens >= 10_000
        else f"{tokens / 1e3:.1f}k"
        if tokens >= 1_000
        else str(tokens)
    )
    return f"${total.cost_usd:.2f}{'+?' if total.unpriced else ''} {count}"
