from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from norton_extractors.s3d import read_state_dict
from norton_extractors.s3dg import S3DG, same_max_pool, space_to_depth

from norton_core import CheckpointError, DecodeSpec, PluginError, build
from norton_core.plugin.cli import component_text
from tests.plugins.extractor_weights import make_tiny_clip, random_state


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared, busy machine two threads contending for cores run tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A zip checkpoint laid out as the released s3d_howto100m.pth: the video tower plus the text tower."""
    path = tmp_path_factory.mktemp("w") / "s3d_howto100m.pth"
    state = random_state()
    state["text_module.word_embd.weight"] = torch.zeros(3, 300)
    torch.save(state, path)
    return path


def test_space_to_depth_folds_2x2x2_blocks_into_channels():
    x = torch.arange(2 * 4 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 4, 6)  # (N, C, T, H, W)
    y = space_to_depth(x)
    assert y.shape == (1, 16, 2, 2, 3)
    # channel ((dt*2 + dh)*2 + dw)*C + c at (t, h, w) holds x[c, 2t+dt, 2h+dh, 2w+dw]
    for dt, dh, dw, c, t, h, w in [(0, 0, 0, 0, 0, 0, 0), (1, 0, 1, 1, 1, 1, 2), (0, 1, 0, 1, 1, 0, 1)]:
        assert y[0, ((dt * 2 + dh) * 2 + dw) * 2 + c, t, h, w] == x[0, c, 2 * t + dt, 2 * h + dh, 2 * w + dw]


def test_same_max_pool_pads_the_far_side_like_tensorflow():
    x = torch.tensor([1.0, 5.0, 2.0, 0.0, 7.0]).view(1, 1, 1, 1, 5)
    # kernel 3 stride 2 over 5 values: TF SAME pads one zero on the right: windows [1,5,2], [2,0,7], [7,0]
    assert same_max_pool(x, (1, 1, 3), (1, 1, 2)).flatten().tolist() == [5.0, 7.0, 7.0]
    # kernel 2 stride 2 needs no padding; ceil mode keeps the lone last value
    assert same_max_pool(x, (1, 1, 2), (1, 1, 2)).flatten().tolist() == [5.0, 2.0, 7.0]


def test_s3dg_shapes_and_rows_independent_of_the_batch():
    net = S3DG().eval()
    net.load_state_dict(random_state())
    clips = torch.rand(3, 3, 8, 32, 48, generator=torch.Generator().manual_seed(0))
    clips[0] *= 0.3
    clips[2, :, :, :16] = 0
    with torch.inference_mode():
        trunk = net.trunk(clips)
        rows = net(clips)
        alone = net(clips[1:2])
    assert trunk.shape == (3, 1024, 1, 1, 2)  # T 8 -> 4 -> 2 -> 1; H 32 -> 16 -> 8 -> 4 -> 2 -> 1; W 48 -> ... -> 2
    assert rows.shape == (3, 512)
    torch.testing.assert_close(alone[0], rows[1], rtol=1e-5, atol=1e-6)
    assert (rows[0] - rows[1]).abs().max() > 1e-4 and (rows[1] - rows[2]).abs().max() > 1e-4  # float error: 1e-7


def test_extractor_loads_the_released_layout_and_normalises_rows(weights):
    extractor = build("feature_extractor", "s3d-howto100m", {}, weights=weights, device="cpu")
    assert extractor.decode == DecodeSpec(fps=30, short_side=224, crop=224, frames_per_row=30)
    assert (extractor.output.width, extractor.output.dtype, extractor.decode.rows_per_second) == (512, "float16", 1.0)
    chunks = torch.rand(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (N, F, 3, H, W)
    rows = extractor.embed(chunks)
    net = S3DG().eval()
    net.load_state_dict(random_state())
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(net(chunks.permute(0, 2, 1, 3, 4)), dim=1)
    torch.testing.assert_close(rows, expected)
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(2))


def test_missing_and_unexpected_keys_are_named_in_one_line(tmp_path):
    state = random_state()
    del state["mixed_5c.conv_b0.conv1.weight"]
    state["head.weight"] = torch.zeros(2)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert "\n" not in message
    assert "missing keys mixed_5c.conv_b0.conv1.weight" in message and "unexpected keys head.weight" in message


def test_wrong_shapes_and_non_checkpoints_are_refused(tmp_path):
    state = random_state()
    state["fc.weight"] = torch.zeros(10, 1024)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"fc.weight \(10, 1024\) \(expected \(512, 1024\)\)"):
        read_state_dict(tmp_path / "shape.pth")
    (tmp_path / "legacy.pth").write_bytes(b"\x80\x02not a zip")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(tmp_path / "legacy.pth")


def test_pickled_code_in_the_weights_never_runs(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save(random_state(), path)
    # replace the pickle with one that would call os.system on load
    with zipfile.ZipFile(path) as src:
        members = {info.filename: src.read(info) for info in src.infolist()}
    pkl = next(name for name in members if name.endswith("data.pkl"))
    members[pkl] = b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR."
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for name, data in members.items():
            dst.writestr(name, data)
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_weights_are_required():
    with pytest.raises(PluginError, match="--weights s3d_howto100m.pth"):
        build("feature_extractor", "s3d-howto100m", {})


def test_registered_as_a_kind_without_importing_torch(norton_plugins):
    text = component_text(norton_plugins, "feature_extractor", "s3d-howto100m")
    assert text.startswith("feature_extractor 's3d-howto100m'") and "(no options)" in text
    code = ("import json, sys; from norton_core.plugin.manager import default_plugins; "
            "listing = default_plugins().as_json(); "
            "print(json.dumps([p['components'] for p in listing if p['name'] == 'extractors'])); "
            "print('torch' in sys.modules, 'av' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ['[{"feature_extractor": ["clip-frames", "s3d-howto100m"]}]', "False False"]


def test_rows_are_float_and_numpy_castable(weights):
    extractor = build("feature_extractor", "s3d-howto100m", {}, weights=weights)
    rows = extractor.embed(torch.zeros(1, 2, 3, 32, 32)).numpy().astype(extractor.output.dtype)
    assert rows.dtype == np.float16 and rows.shape == (1, 512)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_clip_frames_decodes_as_its_processor_says_and_averages_frames(clip_dir):
    from transformers import CLIPModel

    extractor = build("feature_extractor", "clip-frames", {"frames_per_second": 2}, weights=clip_dir)
    assert extractor.decode == DecodeSpec(fps=2, short_side=36, crop=32, frames_per_row=2, mean=(0.5, 0.4, 0.3),
                                          std=(0.2, 0.25, 0.3))
    assert (extractor.output.width, extractor.output.dtype, extractor.decode.rows_per_second) == (16, "float16", 1.0)
    chunks = torch.rand(3, 2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    rows = extractor.embed(chunks)
    model = CLIPModel.from_pretrained(clip_dir).eval()
    with torch.inference_mode():
        per_frame = model.visual_projection(model.vision_model(pixel_values=chunks.flatten(0, 1)).pooler_output)
    per_frame = torch.nn.functional.normalize(per_frame, dim=1).view(3, 2, 16)
    torch.testing.assert_close(rows, torch.nn.functional.normalize(per_frame.mean(dim=1), dim=1))
    with pytest.raises(PluginError, match="needs --weights DIR: a local CLIP model directory"):
        build("feature_extractor", "clip-frames", {})
