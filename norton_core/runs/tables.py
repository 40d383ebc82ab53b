"""Plain and markdown tables for the run tools (rows of strings, first column left-aligned, the rest right)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(value)
    return str(value)


def setting(value: Any) -> str:
    """A recipe value as the recipe would write it (``0.001``, ``"norton"`` without quotes, ``[0.9, 0.98]``)."""
    if isinstance(value, float):
        return f"{value:g}"
    if value == "":
        return '""'
    return cell(value)


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(items: Sequence[str]) -> str:
        return "  ".join(f"{s:<{w}}" if i == 0 else f"{s:>{w}}" for i, (s, w) in enumerate(zip(items, widths,
                                                                                             strict=True))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])
