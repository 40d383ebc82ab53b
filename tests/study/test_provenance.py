"""A finished cell stands for the cell asked for only when its recipe, its data and its first stage are the same;
otherwise one line names what changed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from norton_core.study.provenance import changes, listing_identity, stale_reason, store_identity


def _prov(max_steps: int = 4, lr: float = 1e-3, manifest: str = "aa" * 32, path: str = "/data/train",
          first: Any = None) -> dict[str, Any]:
    return {"recipe": {"train": {"max_steps": max_steps, "lr": lr}, "loss": {"name": "norton"}},
            "data": {"source": "how2", "train": {"path": path, "manifest_sha256": manifest}, "val": None,
                     "eval_root": None},
            "first_stage": first}


def test_the_same_provenance_is_reused() -> None:
    assert stale_reason({"provenance": _prov()}, _prov()) is None


def test_a_changed_recipe_names_each_key_with_old_and_new_values() -> None:
    reason = stale_reason({"provenance": _prov()}, _prov(max_steps=6, lr=2e-3))
    assert reason == "made with other settings: train.lr: 0.001 -> 0.002; train.max_steps: 4 -> 6"


def test_keys_that_appear_or_vanish_are_named_and_long_lists_are_cut() -> None:
    assert changes({"a": {"b": 1}}, {"a": {"b": 1, "c": "x"}}) == ['a.c: (absent) -> "x"']
    many = {"t": {f"k{i}": i for i in range(7)}}
    reason = stale_reason({"provenance": {**_prov(), "recipe": many}}, {**_prov(), "recipe": {"t": {}}})
    assert reason is not None and reason.endswith(" and 3 more") and reason.count("(absent)") == 4


def test_other_data_is_named_but_a_moved_store_with_the_same_manifest_is_not() -> None:
    reason = stale_reason({"provenance": _prov()}, _prov(manifest="bb" * 32))
    assert reason == f'made with other settings: data.train.manifest_sha256: "{"a" * 36}... -> "{"b" * 36}...'
    assert stale_reason({"provenance": _prov()}, _prov(path="/elsewhere/train")) is None


def test_an_arm_whose_first_stage_changed_is_stale() -> None:
    old = {"provenance_sha256": "1", "weights_sha256": "w1"}
    assert "its first stage was trained again or changed" in str(
        stale_reason({"provenance": _prov(first=old)}, _prov(first={**old, "weights_sha256": "w2"})))


def test_a_record_without_provenance_cannot_be_reused() -> None:
    assert "no provenance recorded" in str(stale_reason({"evaluation": {}}, _prov()))


def test_a_store_is_identified_by_its_manifest(how2_data: tuple[Path, Path], tmp_path: Path) -> None:
    store, _ = how2_data
    ident = store_identity(store)
    assert ident == {"path": str(store.absolute()),
                     "manifest_sha256": hashlib.sha256((store / "manifest.json").read_bytes()).hexdigest()}
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    assert store_identity(copy)["manifest_sha256"] == ident["manifest_sha256"]  # the same data elsewhere
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:-1]  # one shard fewer: other data
    manifest["num_videos"] = sum(s["num_videos"] for s in manifest["shards"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert store_identity(copy)["manifest_sha256"] != ident["manifest_sha256"]


def test_evaluation_sets_are_identified_by_their_files_and_sizes(tmp_path: Path) -> None:
    (tmp_path / "youcook2").mkdir()
    (tmp_path / "youcook2" / "a.npy").write_bytes(b"1234")
    before = listing_identity(tmp_path)
    assert before["files"] == 1
    (tmp_path / "youcook2" / "a.npy").write_bytes(b"12345")
    assert listing_identity(tmp_path)["listing_sha256"] != before["listing_sha256"]
