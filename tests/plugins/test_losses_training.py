"""Training moves with the from-scratch options of the norton loss (a toy encoder, a few dozen Adam steps)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import nn

import norton_core

V, C, K, D, CLASSES = 4, 16, 8, 32, 64


class ToyEncoder(nn.Module):
    """Clips of a class share a prototype feature; captions are that class's token: a learnable pairing."""

    def __init__(self) -> None:
        super().__init__()
        self.video = nn.Sequential(nn.Linear(16, D), nn.GELU(), nn.Linear(D, D))
        self.text = nn.Embedding(CLASSES, D)

    def forward(self, feats: torch.Tensor, caps: torch.Tensor) -> dict[str, torch.Tensor]:
        hv, ht = self.video(feats), self.text(caps)
        vm = torch.ones(hv.shape[:2], dtype=torch.bool)
        tm = torch.ones(ht.shape[:2], dtype=torch.bool)
        return {"pooled_video": hv.mean(1), "pooled_text": ht.mean(1), "video_outputs": hv, "text_outputs": ht,
                "video_mask_outputs": vm, "text_mask_outputs": tm}


@pytest.fixture(autouse=True)
def one_thread():
    # tiny ops: OpenMP hand-offs on a shared 2-core machine cost more than the work
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train(options: dict, steps: int = 50, term: str = "video_loss") -> tuple[list[float], nn.Module]:
    torch.manual_seed(0)
    protos = torch.randn(CLASSES, 16)
    model = ToyEncoder()
    loss = norton_core.build("loss", "norton", options)
    opt = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    history = []
    for _ in range(steps):
        cls = torch.randint(0, CLASSES, (V * C,), generator=gen)
        feats = protos[cls][:, None, :] + 0.5 * torch.randn(V * C, 6, 16, generator=gen)
        terms = loss(model(feats, cls[:, None].expand(-1, 5)), {})
        opt.zero_grad()
        terms[term].backward()
        opt.step()
        history.append(terms["video_loss"].item())
    return history, loss


def test_video_paragraph_term_alone_trains_from_scratch_without_min_max() -> None:
    chance = 2 * math.log(V * C // K)
    history, _ = train({"video_similarity_norm": "none", "lse_padding_bias": False})
    assert statistics.mean(history[:5]) > chance
    assert statistics.mean(history[-10:]) < 0.8 * chance


def test_learned_temperature_is_trained() -> None:
    _, loss = train({"video_similarity_norm": "none", "learn_temperature": True}, steps=15, term="loss")
    assert abs(loss.logit_scale.item() - math.log(1 / 0.07)) > 1e-3
