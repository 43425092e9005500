"""Prompt strings: ``text[:weight[:stop]]`` items separated by ``|``.

``"a lake at dawn:1 | blurry:-0.5"`` -> two prompts; a negative weight pushes the
image away from that text. ``stop`` is a distance below which a prompt stops pulling.
The last one or two ``:``-separated fields are read as numbers only when they parse,
so text with colons ("ratio 16:9") stays intact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import TCIGInputError


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float = 1.0
    stop: float = -math.inf


def _number(s: str) -> float | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def parse_prompt(item: str) -> Prompt:
    """One ``text[:weight[:stop]]`` item."""
    parts = item.strip().rsplit(":", 2)
    weight, stop = 1.0, -math.inf
    if len(parts) == 3 and _number(parts[1]) is not None and _number(parts[2]) is not None:
        text, weight, stop = parts[0], _number(parts[1]), _number(parts[2])
    elif len(parts) >= 2 and _number(parts[-1]) is not None:
        text, weight = ":".join(parts[:-1]), _number(parts[-1])
    else:
        text = item.strip()
        if len(parts) >= 2 and parts[-1].strip() and _looks_numeric(parts[-1]):
            raise TCIGInputError(f"prompt: weight {parts[-1].strip()!r} in {item.strip()!r} is not a finite number")
    text = text.strip()
    if not text:
        raise TCIGInputError(f"prompt: item {item.strip()!r} has no text; write 'text:weight'")
    return Prompt(text, float(weight), float(stop))


def _looks_numeric(s: str) -> bool:
    s = s.strip()
    return bool(s) and all(c in "0123456789.+-eE" for c in s) or s.lower() in ("nan", "inf", "-inf", "+inf")


def parse_prompts(text: str, allow_empty: bool = False) -> list[Prompt]:
    """Split on ``|`` and parse each non-blank item. Weight 0 items are dropped."""
    items = [s for s in (text or "").split("|") if s.strip()]
    prompts = [p for p in (parse_prompt(s) for s in items) if p.weight != 0]
    if not prompts and not allow_empty:
        raise TCIGInputError("prompt: empty; give at least one 'text[:weight]' (items separated by '|')")
    if prompts and all(p.weight < 0 for p in prompts):
        raise TCIGInputError(
            "prompt: only negative weights; add a positive prompt (say what the image should show) "
            "so the image has something to move towards"
        )
    return prompts


def parse_region_prompts(text: str) -> dict[str, str]:
    """Lines ``label: prompt`` -> {label: prompt} (the Regional Conditioning node's syntax).

    The prompt part may itself be ``text[:weight]`` items separated by ``|``. Blank lines
    are skipped; a line without ``:`` or a label given twice is refused with its number.
    """
    out: dict[str, str] = {}
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise TCIGInputError(f"region prompts: line {n} {line.strip()!r} needs the form 'label: prompt'")
        label, prompt = (part.strip() for part in line.split(":", 1))
        if not label or not prompt:
            raise TCIGInputError(f"region prompts: line {n} {line.strip()!r} needs both a label and a prompt")
        if label in out:
            raise TCIGInputError(f"region prompts: label {label!r} is given twice (line {n})")
        out[label] = prompt
    return out
