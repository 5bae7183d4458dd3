"""One metric of a result as a short line of text (the CLI's summary, the runner's log)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def metric_text(bundle: Mapping[str, Any], digits: int = 4) -> str:
    """``0.8123``; ``0.8123 ± 0.0101 (3 seeds)`` for a metric averaged over training seeds (mean ± sample
    standard deviation); ``n/a`` (with the reason when known) for a metric without a value."""
    value = bundle.get("value")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        reason = bundle.get("unavailable")
        return f"n/a ({reason})" if reason else "n/a"
    text = f"{value:.{digits}f}"
    seeds = bundle.get("seeds") or {}
    sd = bundle.get("sd")
    if isinstance(sd, (int, float)) and len(seeds) > 1:
        text += f" ± {sd:.{digits}f} ({len(seeds)} seeds)"
    return text
