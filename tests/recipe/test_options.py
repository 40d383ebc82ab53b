from __future__ import annotations

from typing import Literal

import attrs
import pytest

from norton_core.recipe.options import describe, option, parse_config


@attrs.frozen
class Inner:
    nlist: int = option(512, ge=1)


@attrs.frozen
class Schema:
    batch_size: int = option(64, ge=1, help="videos per batch")
    lr: float = option(1e-5, gt=0.0)
    name: str = option("x")
    flag: bool = option(False)
    mode: Literal["fp32", "bf16"] = option("fp32")
    betas: list[float] = option(factory=lambda: [0.9, 0.98])
    inner: Inner = option(factory=Inner)
    maybe: int | None = option(None)


def parse(data):
    return parse_config(Schema, data, path="train", source="r.toml")


def test_valid_values_and_int_for_float():
    cfg, problems = parse({"batch_size": 8, "lr": 1, "betas": [0.5, 1], "inner": {"nlist": 4}, "maybe": 3})
    assert problems == []
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.betas == [0.5, 1.0] and cfg.inner.nlist == 4 and cfg.maybe == 3


@pytest.mark.parametrize("value", [True, "64", 256.0])
def test_no_silent_coercion_to_int(value):
    cfg, problems = parse({"batch_size": value})
    assert cfg is None
    assert len(problems) == 1 and problems[0].startswith("r.toml: train.batch_size: expected integer")


def test_bool_is_not_a_number_and_number_is_not_bool():
    _, problems = parse({"lr": True, "flag": 1})
    assert [p.split(": ")[1] for p in problems] == ["train.lr", "train.flag"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_rejected(value):
    _, problems = parse({"lr": value})
    assert problems == [f"r.toml: train.lr: must be a finite number, got {value!r}"]


def test_range_and_unknown_keys_all_reported():
    _, problems = parse({"batch_size": 0, "lr": -1.0, "batch_sise": 3, "inner": {"nlist": 0}, "mode": "bf61"})
    text = "\n".join(problems)
    assert len(problems) == 5
    assert "train.batch_size: must be >= 1, got 0" in text
    assert "train.lr: must be > 0.0, got -1.0" in text
    assert "train.batch_sise: unknown key (did you mean 'batch_size'?)" in text
    assert "train.inner.nlist: must be >= 1, got 0" in text
    assert "train.mode: expected one of 'fp32', 'bf16', got string 'bf61'" in text


def test_list_items_checked_with_index():
    _, problems = parse({"betas": [0.9, "x"]})
    assert problems == ["r.toml: train.betas[1]: expected number, got string 'x'"]


def test_describe_lists_options_with_type_default_bounds_and_help():
    rows = {row.key: row for row in describe(Schema)}
    row = rows["batch_size"]
    assert (row.type, row.default, row.bounds, row.help, row.required) == ("integer", 64, ">= 1", "videos per batch", False)
    assert rows["betas"].default == [0.9, 0.98]
