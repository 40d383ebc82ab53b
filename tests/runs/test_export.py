"""Exports are verified before use: a manifest of every file (size and sha256), the tokenizer from the files the
export wrote or an error, the model's options within their declared range, and evaluation refuses non-finite
embeddings. The export is made from a one-checkpoint run of the smoke recipe's model (random video encoder, no
training: these tests are about the files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from norton_core.errors import CheckpointError, NortonError
from norton_core.runs.export import MANIFEST, export_run, load, verify_export, write_manifest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "recipes" / "smoke_cpu.toml"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """An export of a run whose one checkpoint holds the smoke model's initial weights."""
    from norton_core.engine import checkpoint as ckpt
    from norton_core.engine.state_files import tensors_to_bytes
    from norton_core.recipe.load import load_recipe

    root = tmp_path_factory.mktemp("export")
    recipe = load_recipe(SMOKE, ['run.name="tiny"'])
    model = recipe.build("model")
    run = root / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps(recipe.resolved()))
    files = {"model.safetensors": tensors_to_bytes(model.state_dict()), "state.json": json.dumps({"step": 2}).encode()}
    ckpt.save_checkpoint(run / "checkpoints", 2, files, keep_last=2, log=lambda *_: None)
    out = root / "export"
    export_run(run, out, log=lambda *_: None)
    return out


@pytest.fixture
def export(pristine: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "export"
    shutil.copytree(pristine, dst)
    return dst


def test_the_manifest_lists_every_file_but_the_model_card(export):
    manifest = json.loads((export / MANIFEST).read_text())
    listed = set(manifest["files"])
    assert {"model.safetensors", "model.json", "recipe.json", "eval.json", "text_encoder/tokenizer.json",
            "text_encoder/config.json"} <= listed
    assert "README.md" not in listed and MANIFEST not in listed
    assert manifest["files"]["model.safetensors"]["size"] == (export / "model.safetensors").stat().st_size
    (export / "README.md").write_text("my own notes\n")  # the model card is for people: editing it is fine
    load(export)


def test_a_deleted_tokenizer_json_is_an_error_not_a_silent_fallback(export):
    from norton_core.evaluation.targets import resolve_targets

    (export / "text_encoder" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"text_encoder/tokenizer\.json: missing from the export \(its "
                                              r"manifest lists it\)"):
        load(export)
    with pytest.raises(CheckpointError, match=r"tokenizer\.json: missing from the export"):
        resolve_targets(export, None)  # norton evaluate EXPORT: before a model is built from its files


def test_a_flipped_weight_byte_is_detected(export):
    data = bytearray((export / "model.safetensors").read_bytes())
    data[-100] ^= 0x01
    (export / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 differs from the export's manifest"):
        load(export)


def test_an_added_file_is_detected(export):
    (export / "text_encoder" / "vocab.txt").write_text("[PAD]\n")  # would change which tokenizer loads
    with pytest.raises(CheckpointError, match=r"vocab\.txt: not written by the export \(not in its manifest\)"):
        verify_export(export)


def test_an_export_without_a_manifest_is_refused_with_the_fix(export):
    (export / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match=r"no manifest\.json.*export the run again with `norton export"):
        load(export)


def test_video_layers_out_of_range_in_model_json_is_refused_before_allocating(export):
    from norton_core.runs.export import export_recipe

    meta = json.loads((export / "model.json").read_text())
    meta["model"]["video_layers"] = 100_000
    (export / "model.json").write_text(json.dumps(meta))
    write_manifest(export)  # re-hashed: the manifest vouches for it, the range does not
    with pytest.raises(CheckpointError) as info:
        load(export)
    assert str(info.value) == f"{export / 'model.json'}: model.video_layers: must be <= 48, got 100000"
    with pytest.raises(CheckpointError, match=r"model\.json: model\.video_layers: must be <= 48"):
        export_recipe(export)  # norton evaluate EXPORT builds the model from the export's recipe


def test_a_fifo_as_model_json_is_refused_without_blocking(export):
    import os

    (export / "model.json").unlink()
    os.mkfifo(export / "model.json")
    with pytest.raises(CheckpointError, match=r"model\.json: not a regular file \(the export wrote one\)"):
        load(export)


def test_nan_weights_give_an_evaluation_error_naming_the_task_and_count(export, tmp_path):
    """A NaN in a LayerNorm weight (re-hashed, so the manifest passes) must not score at chance with exit 0."""
    from safetensors.torch import load as load_tensors
    from safetensors.torch import save

    from norton_core.data.synthetic import generate
    from norton_core.evaluation import run_evaluation

    tensors = load_tensors((export / "model.safetensors").read_bytes())
    key = next(k for k in tensors if k.startswith("video_encoder.") and "LayerNorm.weight" in k)
    tensors[key][0] = float("nan")
    (export / "model.safetensors").write_bytes(save(tensors))
    write_manifest(export)
    model = load(export)
    with pytest.raises(NortonError, match=r"^clips: 1 of 1 embeddings hold NaN or inf"):
        model.embed_videos([np.ones((8, 512), np.float32)])
    sets = generate(tmp_path / "data", 2, seed=1, val_videos=0, youcook2_videos=3, htm_align_videos=0,
                    msrvtt_clips=0)
    with pytest.raises(NortonError) as info:
        run_evaluation(model.model, ["youcook2-clip"], sets.eval_root, progress=False)
    assert str(info.value) == ("evaluation task 'youcook2-clip': youcook2 clips: 23 of 23 embeddings hold NaN or "
                               "inf: the model's weights (or its inputs) are not finite; nothing was scored")


@pytest.mark.slow
def test_norton_evaluate_on_a_damaged_export_exits_2_with_one_line(export):
    (export / "text_encoder" / "tokenizer.json").unlink()
    done = subprocess.run([sys.executable, "-m", "norton_core.cli", "evaluate", str(export)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "tokenizer.json: missing from the export" in done.stderr


def test_an_added_fifo_beside_the_tokenizer_is_refused_without_blocking(export):
    import os

    os.mkfifo(export / "text_encoder" / "added_tokens.json")  # transformers would open it and wait forever
    with pytest.raises(CheckpointError, match=r"added_tokens\.json: not written by the export"):
        verify_export(export)
