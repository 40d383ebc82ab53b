"""The built-in metric sinks: each record of a run reaches them, and `[logging]` chooses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from norton_core import PluginError, RecipeError, build
from norton_core.engine.state import RunContext
from norton_core.runs.scalars import scalars

SMOKE = str(Path(__file__).resolve().parents[2] / "recipes" / "smoke_cpu.toml")
RECIPE = {"run": {"name": "sinks"}, "train": {"lr": 1e-3, "betas": [0.9, 0.98]}, "loss": {"name": "norton"}}
RECORDS = [
    {"event": "start", "step": 0, "total_steps": 4},
    {"event": "evaluation", "label": "before", "step": 0, "results": {"youcook2_clip/R@1": 0.5}},
    {"event": "retrieval", "step": 0, "videos": 24, "seconds": 1.5, "recall": 0.75, "filled": 1.0,
     "backend": "faiss-ivf"},
    {"step": 1, "epoch": 1, "loss": 2.0, "clip_loss": 1.5, "lr": 1e-4, "clips_per_s": 50.0, "time": 1e9},
    {"step": 2, "epoch": 1, "loss": 1.5, "clip_loss": 1.0, "lr": 2e-4, "clips_per_s": 55.0, "time": 1e9},
    {"event": "validation", "label": "val", "step": 2, "results": {"loss": 1.7}},
    {"event": "evaluation", "label": "after", "step": 2, "results": {"youcook2_clip/R@1": 12.5}},
]


def test_scalars_name_every_number_of_every_record():
    tags = [dict(scalars(r)) for r in RECORDS]
    assert tags[1] == {"evaluation/before/youcook2_clip/R@1": 0.5}
    assert tags[2] == {"retrieval/videos": 24.0, "retrieval/seconds": 1.5, "retrieval/recall": 0.75,
                       "retrieval/filled": 1.0}
    assert tags[3] == {"train/loss": 2.0, "train/clip_loss": 1.5, "train/lr": 1e-4, "train/clips_per_s": 50.0}
    assert tags[5] == {"validation/val/loss": 1.7}


def run_sink(name, options, tmp_path, plugins):
    sink = build("metric_sink", name, options, plugins=plugins, run_dir=tmp_path)
    where = sink.start(RunContext(recipe=RECIPE, run_dir=tmp_path))
    for record in RECORDS:
        sink.write(record)
    sink.close()
    return where


def test_jsonl_sink_appends_each_record(tmp_path, norton_plugins):
    where = run_sink("jsonl", {}, tmp_path, norton_plugins)
    assert where == str(tmp_path / "metrics.jsonl")
    assert [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == RECORDS


def test_tensorboard_sink_writes_steps_evaluations_retrieval_and_hparams(tmp_path, norton_plugins):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    where = run_sink("tensorboard", {"dir": "tb"}, tmp_path, norton_plugins)
    assert str(tmp_path / "tb") in where
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars_ = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert scalars_["train/loss"] == [(1, 2.0), (2, 1.5)]
    assert scalars_["evaluation/after/youcook2_clip/R@1"] == [(2, 12.5)]
    assert scalars_["retrieval/recall"] == [(0, 0.75)] and scalars_["retrieval/seconds"] == [(0, 1.5)]
    assert scalars_["validation/val/loss"] == [(2, pytest.approx(1.7))]
    assert "recipe/text_summary" in events.Tags()["tensors"]
    plugin_data = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert b"train.lr" in plugin_data and b"loss.name" in plugin_data


def test_wandb_sink_logs_offline_without_network(tmp_path, norton_plugins, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    where = run_sink("wandb", {"project": "norton-test"}, tmp_path, norton_plugins)
    assert "offline" in where
    wandb.teardown()  # the W&B service writes the run file in the background; at process exit it would do this
    files = list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
    assert len(files) == 1  # what `wandb sync` would upload: the history rows and the recipe as config
    data = files[0].read_bytes()
    for tag in (b"train/loss", b"evaluation/after/youcook2_clip/R@1", b"retrieval/recall", b"validation/val/loss",
                b'"betas"'):
        assert tag in data, tag


class FakeWandb:
    """Stands in for the wandb package: records each ``init``'s arguments and the logged rows."""

    def __init__(self):
        self.inits, self.rows = [], []

    def Settings(self, **kwargs):  # noqa: N802 - wandb's own name
        return kwargs

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self

        class Run:
            id = kwargs.get("id") or f"new{len(fake.inits)}"

            def define_metric(self, *args, **kwargs):
                pass

            def log(self, row):
                fake.rows.append(row)

            def finish(self):
                pass

        return Run()


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_wandb_sink_continues_the_same_wandb_run_on_resume(mode, tmp_path, norton_plugins, monkeypatch):
    """The first start keeps W&B's run id in the run directory; a resume passes it again (online with
    resume="allow"; offline W&B cannot resume, so the start line says how to upload the second directory)."""
    import sys

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    first = run_sink("wandb", {"mode": mode}, tmp_path, norton_plugins)
    assert "id" not in fake.inits[0] and (tmp_path / "wandb" / "norton-run-id").read_text() == "new1\n"
    assert "W&B run new1" in first and "resumed" not in first
    again = run_sink("wandb", {"mode": mode}, tmp_path, norton_plugins)
    assert fake.inits[1]["id"] == "new1" and fake.inits[1].get("resume") == ("allow" if mode == "online" else None)
    assert "W&B run new1" in again and "resumed" in again
    assert ("wandb sync --append --id new1" in again) == (mode == "offline")
    assert (tmp_path / "wandb" / "norton-run-id").read_text() == "new1\n"
    assert {"evaluation/before/youcook2_clip/R@1": 0.5, "step": 0} in fake.rows


def test_validation_reports_a_sink_whose_package_is_missing(tmp_path, norton_plugins, monkeypatch):
    """`norton validate` (and norton-run before anything starts) names a listed sink's missing package and how to
    install it, instead of the run failing when its sinks open."""
    from norton_sinks.wandb import WandbSink

    from norton_core.recipe.load import load_recipe

    monkeypatch.setattr(WandbSink, "needs", {"norton_no_such_package": "pip install 'norton[wandb]'"})
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'extends = "{SMOKE}"\n[logging]\nsinks = ["jsonl", "wandb"]\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe, plugins=norton_plugins)
    assert err.value.lines() == [f"{recipe}:2: logging.sink_options.wandb: 'wandb' needs the norton_no_such_package "
                                 "package, which is not installed (pip install 'norton[wandb]')"]
    recipe.write_text(f'extends = "{SMOKE}"\n[logging]\nsinks = ["jsonl"]\n')
    load_recipe(recipe, plugins=norton_plugins)  # not listed: not needed
    with pytest.raises(PluginError, match="'wandb' needs the norton_no_such_package package"):
        build("metric_sink", "wandb", {}, plugins=norton_plugins, run_dir=tmp_path)  # outside a recipe too


def test_logging_table_is_validated_like_the_engine_tables(tmp_path, norton_plugins):
    from norton_core.recipe.load import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text(f'extends = "{SMOKE}"\n[logging]\nsinks = ["jsonl", "tensorbord", "jsonl"]\nflush = 3\n'
                      '[logging.sink_options.wandb]\nmode = "offline"\n'
                      '[logging.sink_options.jsonl]\npath = "x"\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe, plugins=norton_plugins)
    text = "\n".join(err.value.lines())
    assert "logging.sinks[1]: unknown metric_sink 'tensorbord' (did you mean 'tensorboard'?)" in text
    assert "logging.sinks[2]: 'jsonl' is listed twice" in text
    assert "logging.flush" in text
    assert "logging.sink_options.wandb: options for 'wandb', which is not in logging.sinks" in text
    assert "logging.sink_options.jsonl.path" in text
    ok = load_recipe(SMOKE, plugins=norton_plugins, overrides=['logging.sinks=["jsonl", "tensorboard"]',
                                                                'logging.sink_options.tensorboard.dir="events"'])
    assert ok.resolved()["logging"] == {"sinks": ["jsonl", "tensorboard"],
                                        "sink_options": {"jsonl": {}, "tensorboard": {"dir": "events"}},
                                        "chance_tolerance": 0.03, "chance_share": 0.5}


def test_a_chosen_sink_that_is_not_installed_says_which_extra(tmp_path, norton_plugins, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec  # how a component's `needs` are looked for: absent, as on a bare install
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name in ("tensorboard", "wandb")
                        else real(name, *a, **k))
    with pytest.raises(PluginError, match=r"pip install 'norton\[tensorboard\]'"):
        build("metric_sink", "tensorboard", {}, plugins=norton_plugins, run_dir=tmp_path)
    with pytest.raises(PluginError, match=r"pip install 'norton\[wandb\]'"):
        build("metric_sink", "wandb", {}, plugins=norton_plugins, run_dir=tmp_path)

