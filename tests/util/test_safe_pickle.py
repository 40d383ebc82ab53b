"""The shared pickle guard: plain-data pickles load, anything that would build an object or describe more values than
allowed is refused before Python builds a thing, and the refusal names the file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from norton_core._util.safe_pickle import PickleRefused, load_plain, scan
from norton_core.errors import DataError


class _Evil:
    def __reduce__(self):  # noqa: ANN204 - the classic payload
        return (os.system, (f"touch {self.marker}",))

    def __init__(self, marker: Path) -> None:
        self.marker = marker


def _shared_levels(levels: int, fanout: int = 60) -> object:
    """Each level is a list referencing the previous level ``fanout`` times: tiny on disk, fanout**levels values."""
    value: object = ["vid"]
    for _ in range(levels):
        value = [value] * fanout
    return {0: value}


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_values_round_trip(protocol: int) -> None:
    value = {"a": [1, -2, 3.5, (True, False, None)], 7: ("x", [{"y": 10**30}]), "": []}
    data = pickle.dumps(value, protocol=protocol)
    assert load_plain(data, source="v.pkl", max_items=100, max_depth=5) == value


def test_a_reduce_payload_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps({"records": [1, 2, _Evil(marker)]})
    with pytest.raises(PickleRefused, match=r"^val\.pkl: pickle byte \d+: opcode (STACK_GLOBAL|GLOBAL)"):
        load_plain(data, source="val.pkl", max_items=1000, max_depth=5)
    assert not marker.exists()
    assert issubclass(PickleRefused, DataError)  # the CLI prints it as one line


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", bytearray(b"x"), frozenset({1})], ids=["set", "bytes",
                                                                                         "bytearray", "frozenset"])
def test_non_plain_values_are_refused(value: object) -> None:
    with pytest.raises(PickleRefused, match="only dicts, lists, tuples"):
        load_plain(pickle.dumps([value], protocol=4), source="v.pkl", max_items=100, max_depth=5)


def test_shared_sub_lists_are_refused_by_count_not_walked() -> None:
    data = pickle.dumps(_shared_levels(6))
    assert len(data) < 800  # the 756-byte file describes 60**6 = 4.7e10 values
    with pytest.raises(PickleRefused, match="more than 10000 values"):
        load_plain(data, source="meta.pkl", max_items=10_000, max_depth=10)
    items, depth = scan(pickle.dumps(_shared_levels(2, 3)), source="m", plain=True, max_items=100, max_depth=10)
    assert (items, depth) == (1 + 1 + 1 + 3 * (1 + 3 * 2), 4)  # dict, key, outer list, 3 x (list, 3 x ["vid"])


def test_depth_and_self_reference_are_bounded() -> None:
    deep: list = []
    for _ in range(30):
        deep = [deep]
    with pytest.raises(PickleRefused, match="nests 31 containers deep, more than the 3"):
        load_plain(pickle.dumps(deep), source="d.pkl", max_items=1000, max_depth=3)
    loop: list = []
    loop.append(loop)
    with pytest.raises(PickleRefused, match="contains itself"):
        load_plain(pickle.dumps(loop), source="l.pkl", max_items=1000, max_depth=3)


@pytest.mark.parametrize("data", [b"", b"\x80\x04", b"\x80\x04]q\x00h\x07.", b"\x80\x04}]]s.", b"garbage"],
                         ids=["empty", "no-stop", "bad-memo", "unhashable-key", "garbage"])
def test_malformed_pickles_are_one_clear_error(data: bytes) -> None:
    with pytest.raises(PickleRefused, match=r"^bad\.pkl: "):
        load_plain(data, source="bad.pkl", max_items=100, max_depth=5)


def test_nested_empty_lists_are_refused_within_the_limit_not_after_building_the_skeleton() -> None:
    """2 MB of nested empty lists (a million levels): the guard stops after max_items containers, holding memory
    proportional to the limit, instead of recording every level before it measures the depth."""
    import tracemalloc

    levels = 1_000_000
    data = b"\x80\x04" + b"]" * levels + b"a" * (levels - 1) + b"."
    tracemalloc.start()
    try:
        with pytest.raises(PickleRefused, match=r"^nested\.pkl: the pickle builds more than 10000 values"):
            load_plain(data, source="nested.pkl", max_items=10_000, max_depth=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.0f} MiB"


def test_many_appends_to_one_list_are_counted_as_they_arrive() -> None:
    one = pickle.dumps("vid_0")[2:-1]  # a short string opcode
    data = b"\x80\x04](" + one * 50_000 + b"e."  # APPENDS of 50,000 strings
    with pytest.raises(PickleRefused, match="builds more than 1000 values"):
        load_plain(data, source="wide.pkl", max_items=1000, max_depth=8)
