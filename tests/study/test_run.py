"""``norton study``: every cell trained once (finished cells skipped), the report with intervals, paired
differences and the ground-truth diagnostics, on a seconds-long recipe."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from norton_core import hookimpl
from norton_core.cli import main
from norton_core.plugin.manager import default_plugins

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _study(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(f"""
name = "tiny"
base = "{RECIPES / 'smoke_cpu.toml'}"
output_dir = "{tmp_path / 'out'}"
seeds = [0]
baseline = "norton"
metrics = ["youcook2_clip/R@1"]
set = ['data.val_videos=4', 'run.cache_dir={json.dumps(str(tmp_path / 'cache'))}']
diagnostics = true

[variants]
key = "data.nonvisual_prob"
values = [0.0, 0.5]

[[arms]]
name = "norton"

[[arms]]
name = "nce"
set = ['loss={{ name = "videoclip-nce" }}']
""")
    return path


def test_study_runs_each_cell_once_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _study(tmp_path)
    assert main(["study", str(study)]) == 0
    out = tmp_path / "out"
    cells = sorted(p.relative_to(out).as_posix() for p in out.glob("cells/*/*/*.json"))
    assert cells == ["cells/nonvisual_prob=0.0/seed0/nce.json", "cells/nonvisual_prob=0.0/seed0/norton.json",
                     "cells/nonvisual_prob=0.5/seed0/nce.json", "cells/nonvisual_prob=0.5/seed0/norton.json"]
    clean = json.loads((out / "cells/nonvisual_prob=0.0/seed0/norton.json").read_text())
    epochs = clean["diagnostics"]
    assert sorted(epochs, key=int) == ["0", "1"]  # the start of the run and its one epoch
    # no non-visual caption in the held-out videos: recall is undefined, nothing flagged is a false positive
    assert epochs["1"]["nonvisual_captions"] == 0 and epochs["1"]["bucket_recall"] is None
    assert epochs["1"]["bucket_precision"] in (None, 0.0)
    noisy = json.loads((out / "cells/nonvisual_prob=0.5/seed0/norton.json").read_text())["diagnostics"]["1"]
    assert noisy["nonvisual_captions"] > 0 and 0.0 <= noisy["bucket_flag_rate"] <= 1.0
    assert 0.0 <= noisy["plan_on_step"] <= 1.0 and 0.0 <= noisy["faulty_on_duplicates"] <= 1.0
    report = (out / "report.md").read_text()
    assert "## youcook2_clip/R@1" in report and "nce − norton" in report and "Ground-truth diagnostics" in report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed: no plots" in capsys.readouterr().out
    else:
        assert (out / "plots" / "youcook2_clip_Rat1.png").is_file() and "](plots/youcook2_clip_Rat1.png)" in report
    capsys.readouterr()
    assert main(["study", str(study), "--note", "again"]) == 0  # everything is finished: nothing trains
    printed = capsys.readouterr().out
    assert printed.count("done, skipped") == 4 and "norton: stage" not in printed and "again" in printed


def test_study_file_problems_are_all_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('base = "missing.toml"\nseeds = [1, 1]\ncolour = "red"\n[[arms]]\nname = "a"\nset = ["x"]\n')
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err
    for problem in ("colour: unknown key", "base: 'missing.toml': no such recipe", "seeds: repeated",
                    "arms[0].set: 'x' is not table.key=value"):
        assert problem in err


class _TermAfterFirstCell:
    """SIGTERM to this process as the first cell's run ends: the signal is taken between cells."""

    def __init__(self) -> None:
        self.sent = False

    @hookimpl
    def norton_run_end(self, run, metrics):  # type: ignore[no-untyped-def]
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_between_cells_stops_the_study_with_the_finished_cell_recorded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _study(tmp_path)
    plugins = default_plugins()
    plugins.register(_TermAfterFirstCell(), name="term-after-first-cell")
    try:
        assert main(["study", str(study), "--values", "0.0"]) == 143
    finally:
        plugins.unregister(name="term-after-first-cell")
    assert "norton: error: SIGTERM: stopped before nonvisual_prob=0.0 seed 0: arm nce (1 of 2 stages finished and " \
           "recorded); run the study again to continue" in capsys.readouterr().err
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("cells/*/*/*.json")) == ["norton.json"]
    assert not (out / "report.md").exists()
    assert main(["study", str(study), "--values", "0.0"]) == 0
    assert capsys.readouterr().out.count("done, skipped") == 1
    assert sorted(p.name for p in out.glob("cells/*/*/*.json")) == ["nce.json", "norton.json"]
