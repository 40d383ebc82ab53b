"""The norton / videoclip-nce losses against a plain dense log-domain implementation of the same formulas."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from norton_dense_reference import dense_norton_loss, sinkhorn_log_dense
from norton_losses.sinkhorn import bucket_log_marginals, sinkhorn, sinkhorn_log, uniform_log_marginals

import norton_core

LEAVES = ("pooled_video", "pooled_text", "video_outputs", "text_outputs")


def make_outputs(b: int, tt: int, tv: int, d: int, seed: int, scale: float = 1.0,
                 p_valid: float = 0.7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {
        "pooled_video": torch.randn(b, d, generator=g, dtype=torch.float64) * scale,
        "pooled_text": torch.randn(b, d, generator=g, dtype=torch.float64) * scale,
        "video_outputs": torch.randn(b, tv, d, generator=g, dtype=torch.float64),
        "text_outputs": torch.randn(b, tt, d, generator=g, dtype=torch.float64),
        "video_mask_outputs": torch.rand(b, tv, generator=g) < p_valid,
        "text_mask_outputs": torch.rand(b, tt, generator=g) < p_valid,
    }
    # every row keeps at least one valid token (the model's [SEP] always is)
    out["video_mask_outputs"][:, -1] = True
    out["text_mask_outputs"][:, 1] = True
    return out


def _leaves(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.detach().clone().requires_grad_() if k in LEAVES else v) for k, v in out.items()}


DENSE_KW = {  # loss option -> keyword of the dense reference
    "lse_padding_bias": "lse_padding_bias", "video_similarity_norm": "norm", "prompt_ratio": "prompt_ratio",
    "faulty_negatives": "faulty_negatives", "alpha": "alpha", "sequence_length": "k", "beta": "beta",
    "video_epsilon": "epsilon", "clip_epsilon": "clip_epsilon", "sequence_weight": "sequence_weight",
}


def compare(options: dict, out: dict[str, torch.Tensor], tol: float = 1e-5) -> None:
    """Our float32 loss vs the dense float64 reference: terms and input gradients agree to ``tol`` relative to
    max(1, magnitude) (float32 rounding alone, amplified by min-max and the 1/0.07 scale, reaches ~1e-6 of it)."""
    loss = norton_core.build("loss", "norton", options)
    ours_in, dense_in = _leaves(out), _leaves(out)
    ours = loss(ours_in, {})
    kwargs = {DENSE_KW[k]: v for k, v in options.items() if k in DENSE_KW}
    if options.get("learn_temperature"):
        kwargs["logit_scale"] = loss.logit_scale.detach().double()
    dense = dense_norton_loss(dense_in, **kwargs)
    for term in ("loss", "clip_loss", "video_loss"):
        bound = tol * max(1.0, abs(dense[term].item()))
        assert abs(ours[term].item() - dense[term].item()) <= bound, (term, ours[term].item(), dense[term].item())
    ours["loss"].backward()
    dense["loss"].backward()
    for key in LEAVES:
        diff = (ours_in[key].grad - dense_in[key].grad).abs().max().item()
        assert diff <= tol * max(1.0, dense_in[key].grad.abs().max().item()), (key, diff)


FIXES = [
    {},
    {"lse_padding_bias": False},
    {"video_similarity_norm": "none"},
    {"learn_temperature": True},
    {"prompt_ratio": 0.0},
    {"faulty_negatives": False},
    {"alpha": 0.1, "sequence_length": 4, "beta": 0.5},
    {"fine_grained_cache_mb": 0.0},  # every block recomputed in the backward pass
    {"fine_grained_cache_mb": 0.002},  # some blocks kept, some recomputed
]


@pytest.mark.parametrize("options", FIXES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_loss_equals_dense_reference(options: dict) -> None:
    compare(options, make_outputs(b=32, tt=9, tv=6, d=16, seed=1))


def test_loss_equals_dense_at_model_shapes() -> None:
    compare({}, make_outputs(b=64, tt=31, tv=18, d=24, seed=2, scale=0.3))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.integers(1, 4), k=st.sampled_from([2, 4, 8]), tt=st.integers(2, 12), tv=st.integers(2, 9),
       p_valid=st.floats(0.05, 1.0), seed=st.integers(0, 10_000), bias=st.booleans(),
       norm=st.sampled_from(["minmax", "none"]))
def test_loss_matches_dense_property(groups: int, k: int, tt: int, tv: int, p_valid: float, seed: int,
                                     bias: bool, norm: str) -> None:
    out = make_outputs(b=groups * k, tt=tt, tv=tv, d=8, seed=seed, p_valid=p_valid)
    compare({"sequence_length": k, "lse_padding_bias": bias, "video_similarity_norm": norm}, out)


def test_sinkhorn_matches_log_domain_and_marginals() -> None:
    g = torch.Generator().manual_seed(0)
    for lo, hi in [(-12.0, 60.0), (-500.0, 500.0)]:
        z = torch.rand(1, 96, 96, generator=g, dtype=torch.float64) * (hi - lo) + lo
        mu, nu = uniform_log_marginals(96, 96, z.device)
        ours = sinkhorn(z, mu, nu, 50).exp().double()
        ref = sinkhorn_log_dense(z, mu.double(), nu.double(), 50).exp()
        assert (ours - ref).abs().max().item() < 1e-7
        # columns are exact after the last (column) step
        assert torch.allclose(ours.sum(1), torch.full_like(ours.sum(1), 1 / 192), rtol=1e-5, atol=0)
    # rows converge with more iterations
    z = torch.rand(1, 96, 96, generator=g) * 20
    plan = sinkhorn(z, mu, nu, 2000).exp()
    assert torch.allclose(plan.sum(2), torch.full_like(plan.sum(2), 1 / 192), rtol=1e-4, atol=0)
    z = torch.rand(50, 9, 9, generator=g) * 10
    mu, nu = bucket_log_marginals(8, 8, z.device)
    plan = sinkhorn(z, mu, nu, 200).exp()
    assert torch.allclose(plan.sum(2), mu.exp().expand(50, 9), atol=1e-6)
    assert torch.allclose(plan.sum(1), nu.exp().expand(50, 9), atol=1e-6)


def test_sinkhorn_falls_back_to_log_domain_when_scalings_explode() -> None:
    # a block-structured matrix whose plan must use entries 1000 below their row maximum
    z = torch.zeros(1, 4, 4)
    z[0, :2, :2] = 1000.0
    mu, nu = uniform_log_marginals(4, 4, z.device)
    ours = sinkhorn(z, mu, nu, 30)
    ref = sinkhorn_log(z, mu, nu, 30)
    assert torch.isfinite(ours).all()
    assert (ours.exp() - ref.exp()).abs().max().item() < 1e-6


def test_plan_and_prompt_carry_no_gradient_and_temperature_learns_only_when_asked() -> None:
    out = _leaves(make_outputs(b=16, tt=6, tv=5, d=8, seed=3))
    fixed = norton_core.build("loss", "norton", {})
    assert list(fixed.parameters()) == []
    sim = fixed.similarity({k: v.float() if v.is_floating_point() else v for k, v in out.items()})
    blocks = sim.view(2, 8, 2, 8).transpose(1, 2).reshape(4, 8, 8)
    plan = fixed.sequence_plan(blocks, sim.diagonal().min())
    assert not plan.requires_grad and sim.requires_grad
    terms = fixed(out, {})
    assert not terms["prompt_value"].requires_grad
    learned = norton_core.build("loss", "norton", {"learn_temperature": True})
    assert [n for n, _ in learned.named_parameters()] == ["logit_scale"]
    assert "logit_scale" in learned.state_dict()
    learned(_leaves(out), {})["loss"].backward()
    assert learned.logit_scale.grad is not None and learned.logit_scale.grad.abs().item() > 0


def test_loss_finite_for_zero_rows_and_huge_logits() -> None:
    out = make_outputs(b=32, tt=7, tv=5, d=16, seed=4)
    out["pooled_video"][:3] = 0.0
    out["text_outputs"][5] = 0.0
    out["video_outputs"][6] = 0.0
    unit = out["pooled_text"] / out["pooled_text"].norm(dim=1, keepdim=True)
    out["pooled_text"] = unit
    out["pooled_video"][3:] = 500 * unit[3:]  # positives at +500
    out["pooled_video"][3] = -500 * unit[3]  # and one at -500
    for options in ({}, {"lse_padding_bias": False, "video_similarity_norm": "none", "learn_temperature": True}):
        leaves = _leaves(out)
        terms = norton_core.build("loss", "norton", options)(leaves, {})
        assert all(torch.isfinite(v).all() for v in terms.values()), terms
        terms["loss"].backward()
        assert all(torch.isfinite(leaves[k].grad).all() for k in LEAVES)
    x = out["pooled_video"] @ out["pooled_text"].t()
    assert x.max() >= 499 and x.min() <= -499  # the logits really are huge
    # all-zero similarity matrices (every row zero) stay finite too
    zero = {k: (torch.zeros_like(v) if k in LEAVES else v) for k, v in out.items()}
    terms = norton_core.build("loss", "norton", {})(zero, {})
    assert all(torch.isfinite(v).all() for v in terms.values())


def test_loss_runs_in_float32_under_bfloat16_autocast() -> None:
    out = make_outputs(b=16, tt=6, tv=5, d=8, seed=5)
    loss = norton_core.build("loss", "norton", {})
    plain = loss({k: v.float() if v.is_floating_point() else v for k, v in out.items()}, {})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss({k: v.float() if v.is_floating_point() else v for k, v in out.items()}, {})
    assert auto["loss"].dtype == torch.float32
    assert abs(auto["loss"].item() - plain["loss"].item()) < 1e-5


def test_batch_not_multiple_of_sequence_length_is_a_recipe_error() -> None:
    out = make_outputs(b=12, tt=5, tv=4, d=8, seed=6)
    with pytest.raises(norton_core.RecipeError, match="sequence_length"):
        norton_core.build("loss", "norton", {})(out, {})


def test_videoclip_nce_is_symmetric_cross_entropy() -> None:
    out = make_outputs(b=10, tt=4, tv=4, d=8, seed=7)
    terms = norton_core.build("loss", "videoclip-nce", {})(out, {})
    x = out["pooled_video"] @ out["pooled_text"].t()
    expected = -x.diagonal().sum() / 10 * 2 + torch.logsumexp(x, 1).mean() + torch.logsumexp(x, 0).mean()
    assert math.isclose(terms["loss"].item(), expected.item(), rel_tol=1e-5)
    # and equals the norton clip loss without faulty negatives
    norton = norton_core.build("loss", "norton", {"faulty_negatives": False, "sequence_weight": 0.0})(out, {})
    assert math.isclose(norton["loss"].item(), terms["loss"].item(), rel_tol=1e-6)


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(norton_core.RecipeError, match="temprature"):
        norton_core.build("loss", "norton", {"temprature": 0.1})


def test_plans_are_the_plans_the_loss_uses() -> None:
    """``plans`` (for diagnostics) returns the clip plan of L_clip and, per sequence, its own block's plan with the
    bucket column: dropping the bucket and rescaling gives the plan L_video weights its block with."""
    loss = norton_core.build("loss", "norton", {"sequence_length": 4})
    out = {k: v.float() for k, v in make_outputs(8, 6, 5, 16, seed=3).items()}
    plans = loss.plans(out)
    assert plans["clip_plan"].shape == (8, 8) and plans["sequence_plan"].shape == (2, 4, 5)
    torch.testing.assert_close(plans["clip_plan"].sum(1), torch.ones(8), atol=1e-3, rtol=0)
    torch.testing.assert_close(plans["sequence_plan"].sum(2), torch.full((2, 4), 1 / 8), atol=1e-4, rtol=0)
    sim = loss.similarity(out)
    blocks = sim.view(2, 4, 2, 4).transpose(1, 2).reshape(4, 4, 4)
    prompt = torch.kthvalue(sim.diagonal(), int(0.3 * 8)).values
    used = loss.sequence_plan(blocks, prompt)[[0, 3]]
    own = plans["sequence_plan"][:, :, :4]
    torch.testing.assert_close(own * 4 / own.sum(dim=(1, 2), keepdim=True), used)
    assert float(plans["prompt"]) == pytest.approx(float(prompt))
    no_bucket = norton_core.build("loss", "norton", {"sequence_length": 4, "prompt_ratio": 0.0}).plans(out)
    assert float(no_bucket["sequence_plan"][:, :, 4].abs().max()) == 0.0 and math.isnan(float(no_bucket["prompt"]))


def test_many_small_problems_equal_the_log_domain_even_with_extreme_costs() -> None:
    """The bucket OT's batched path (16,384 blocks of 9 x 9 at the paper's batch): equal to the float64 reference in
    the loss's regime, to the float32 log-domain loop (the fallback) for costs far beyond exp's range, never NaN."""
    g = torch.Generator().manual_seed(5)
    z = torch.rand(600, 9, 9, generator=g, dtype=torch.float64) * 10  # min-max normalised scores / eps = 0.1
    extreme = torch.arange(600) % 5 == 0
    z[extreme] = torch.randn(120, 9, 9, generator=g, dtype=torch.float64) * 1e4
    mu, nu = bucket_log_marginals(8, 8, z.device)
    ours = sinkhorn(z, mu, nu, 50).exp().double()
    ref = sinkhorn_log_dense(z, mu.double(), nu.double(), 50).exp()
    assert (ours[~extreme] - ref[~extreme]).abs().max().item() < 3e-7
    # float32 scores of size 1e4 carry ~1e-3 of rounding: as close to float64 as the float32 log-domain loop gets
    loop_error = (sinkhorn_log(z[extreme], mu, nu, 50).exp().double() - ref[extreme]).abs().max().item()
    assert (ours[extreme] - ref[extreme]).abs().max().item() <= 2 * loop_error + 1e-6
    degenerate = torch.rand(3, 9, 9, generator=g) * 10
    degenerate[0] = 0.0
    degenerate[1, :, 0] = -3e38
    degenerate[2, 4] = 3e38
    assert not torch.isnan(sinkhorn(degenerate, mu, nu, 50)).any()
