"""Reading a run's records as scalars: shared by the metric sinks (TensorBoard, W&B, a plugin's) and the run tools.

A record is what the engine appends to ``metrics.jsonl``: a step record ``{"step", "epoch", <terms>, "lr", ...}``
or an event record ``{"event": ..., "step", ...}``. :func:`scalars` names each number in it the same way for every
sink, so a TensorBoard tag, a W&B key and a plot's series agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

#: fields that place a record rather than measure anything
_PLACE = ("step", "epoch", "time", "event", "label")


def scalars(record: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` for every number of ``record`` (booleans and strings are left to the JSONL log).

    Step records give ``train/<key>``; event records ``<event>/<key>``, with an evaluation's (or validation's)
    ``label`` after the event and its ``results`` mapping flattened: ``evaluation/after/youcook2_clip/R@1``.
    """
    event = record.get("event")
    prefix = "train" if event is None else str(event)
    if isinstance(record.get("label"), str):
        prefix = f"{prefix}/{record['label']}"
    for key, value in record.items():
        if key in _PLACE:
            continue
        yield from _numbers(value, prefix if key == "results" else f"{prefix}/{key}")


def _numbers(value: Any, tag: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        yield tag, float(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _numbers(item, f"{tag}/{key}")

