"""The norton / videoclip-nce losses against a plain dense log-domain implementation of the same formulas."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from norton_losses.sinkhorn import bucket_log_marginals, sinkhorn, sinkhorn_log, uniform_log_marginals

import norton_core
from tests.plugins.norton_dense_reference import dense_norton_loss, sinkhorn_log_dense

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
@example(groups=2, k=8, tt=11, tv=2, p_valid=0.828125, seed=500, bias=True, norm="none")  # 1.3e-5 off: see below
def test_loss_matches_dense_property(groups: int, k: int, tt: int, tv: int, p_valid: float, seed: int,
                                     bias: bool, norm: str) -> None:
    """Random shapes and masks, some with ill-conditioned OT kernels (entries down to ~1e-5): there float32 rounding
    of the Sinkhorn scalings (~3e-7 of float64's, either CPU loop), amplified by the 1/0.07 scale, reached 2.6e-5
    relative in 300 random cases (1e-5 failed ~1 case in 100, i.e. 8% of 12-example runs). A bug is orders above."""
    out = make_outputs(b=groups * k, tt=tt, tv=tv, d=8, seed=seed, p_valid=p_valid)
    compare({"sequence_length": k, "lse_padding_bias": bias, "video_similarity_norm": norm}, out, tol=5e-5)


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


def test_videoclip_nce_learns_its_temperature_only_when_asked_and_keeps_it_in_range() -> None:
    out = _leaves(make_outputs(b=10, tt=4, tv=4, d=8, seed=7))
    fixed = norton_core.build("loss", "videoclip-nce", {"temperature": 5.0})
    assert list(fixed.parameters()) == [] and "temperature" not in fixed(out, {})
    learned = norton_core.build("loss", "videoclip-nce", {"temperature": 5.0, "learn_temperature": True})
    assert [n for n, _ in learned.named_parameters()] == ["log_temperature"]
    assert "log_temperature" in learned.state_dict()  # so a resumed run continues from the learnt value
    terms = learned(out, {})
    # at its start value the learnt loss is the fixed one, and it reports the temperature it used
    assert math.isclose(terms["loss"].item(), fixed(out, {})["loss"].item(), rel_tol=1e-6)
    assert math.isclose(terms["temperature"].item(), 5.0, rel_tol=1e-6)
    terms["loss"].backward()
    assert learned.log_temperature.grad is not None and learned.log_temperature.grad.abs().item() > 0
    with torch.no_grad():
        learned.log_temperature.fill_(math.log(1e-6))
    assert math.isclose(learned(out, {})["temperature"].item(), 0.01, rel_tol=1e-5)
    with pytest.raises(norton_core.RecipeError, match=r"loss.temperature = 1000.0 is outside \[0.01, 100\]"):
        norton_core.build("loss", "videoclip-nce", {"temperature": 1000.0, "learn_temperature": True})


def test_clip_temperature_divides_the_clip_logits_like_the_first_stage_temperature() -> None:
    """``clip_temperature = T`` is the clip loss (faulty-negative plan included) on Zv Zt^T / T, so a second stage
    sees its first stage's logits; the video-paragraph term (cosines) is unchanged; T = 5 with
    faulty_negatives = false is exactly ``videoclip-nce`` at ``temperature = 5``."""
    out = make_outputs(b=16, tt=5, tv=4, d=8, seed=8, scale=2.0)
    shrunk = {**out, "pooled_video": out["pooled_video"] / 5 ** 0.5, "pooled_text": out["pooled_text"] / 5 ** 0.5}
    hot = norton_core.build("loss", "norton", {"clip_temperature": 5.0})(out, {})
    cold = norton_core.build("loss", "norton", {})(shrunk, {})
    for term in ("clip_loss", "video_loss", "loss"):
        assert math.isclose(hot[term].item(), cold[term].item(), rel_tol=1e-5), term
    assert not math.isclose(hot["clip_loss"].item(), norton_core.build("loss", "norton", {})(out, {})["clip_loss"].item(),
                            rel_tol=1e-3)
    nce = norton_core.build("loss", "videoclip-nce", {"temperature": 5.0})(out, {})
    plain = norton_core.build("loss", "norton", {"clip_temperature": 5.0, "faulty_negatives": False,
                                                 "sequence_weight": 0.0})(out, {})
    assert math.isclose(nce["loss"].item(), plain["loss"].item(), rel_tol=1e-6)


def test_mean_sequence_similarity_is_the_fused_similarity_without_its_fine_grained_term() -> None:
    out = make_outputs(b=16, tt=5, tv=4, d=8, seed=9)
    mean = norton_core.build("loss", "norton", {"sequence_similarity": "mean"})
    heavy = norton_core.build("loss", "norton", {"fusion_weight": 1e9})  # w -> inf: S -> S_mean
    fused = norton_core.build("loss", "norton", {})
    assert torch.allclose(mean.similarity(out).double(), heavy.similarity(out).double(), atol=1e-6)
    assert not torch.allclose(mean.similarity(out), fused.similarity(out), atol=1e-3)
    assert math.isclose(mean(out, {})["video_loss"].item(), heavy(out, {})["video_loss"].item(), rel_tol=1e-4)


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


# --- the compiled CPU loop of the many-problems Sinkhorn (norton_losses.sinkhorn_cpu, numba) ---


def _scaling_inputs(p: int, m: int, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """A kernel in (0, 1] with a 1 in every row and column, as sinkhorn() builds it, and positive a, mu, nu."""
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(p, m, n, generator=g) * 12
    z = z - z.amax(dim=2, keepdim=True)
    kernel = (z - z.amax(dim=1, keepdim=True)).exp()
    a, mu = torch.rand(p, m, 1, generator=g) + 0.1, torch.rand(p, m, 1, generator=g) + 0.1
    return kernel, a, mu, torch.rand(p, n, 1, generator=g) + 0.1


def _with_torch_loop(monkeypatch: pytest.MonkeyPatch, fn):  # noqa: ANN001, ANN202
    """Run ``fn`` with the CPU dispatch sent to the torch problems-last loop (what the CPU ran before numba)."""
    from norton_losses import sinkhorn as sk
    from norton_losses import sinkhorn_cpu

    with monkeypatch.context() as patch:
        patch.setattr(sinkhorn_cpu, "iterate", sk._iterate_problems_last)
        return fn()


def test_compiled_loop_is_the_cpu_path_and_equals_the_torch_loop_and_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the loss's scores, on scores wide enough for clamped kernel entries, and on scores far beyond exp's range
    (the log-domain fallback): the compiled loop's plans equal the torch loop's to float32 rounding and the float64
    log-domain plans (of the float32-rounded scores, so that only the solver's rounding counts) within the
    tolerances of the tests above."""
    from norton_losses import sinkhorn_cpu

    calls = []
    original = sinkhorn_cpu.iterate
    monkeypatch.setattr(sinkhorn_cpu, "iterate", lambda *args: calls.append(args[0].shape) or original(*args))
    g = torch.Generator().manual_seed(11)
    mu, nu = bucket_log_marginals(8, 8, torch.device("cpu"))
    for regime, z in [("loss", torch.rand(300, 9, 9, generator=g, dtype=torch.float64) * 10),
                      ("clamped", torch.rand(300, 9, 9, generator=g, dtype=torch.float64) * 200 - 100),
                      ("extreme", torch.randn(300, 9, 9, generator=g, dtype=torch.float64) * 1e4)]:
        calls.clear()
        ours = sinkhorn(z, mu, nu, 50)
        assert calls == [(300, 9, 9)], regime  # the compiled loop ran, once, on every problem
        before = _with_torch_loop(monkeypatch, lambda z=z: sinkhorn(z, mu, nu, 50))
        torch.testing.assert_close(ours.exp(), before.exp(), rtol=1e-5, atol=1e-7, msg=regime)
        ref = sinkhorn_log_dense(z.float().double(), mu.double(), nu.double(), 50).exp()
        error = (ours.exp().double() - ref).abs().max().item()
        if regime != "loss":  # scores of size 100 and more: as close as the float32 log-domain loop (the fallback) gets
            loop_error = (sinkhorn_log(z, mu, nu, 50).exp().double() - ref).abs().max().item()
            assert error <= 2 * loop_error + 1e-6
        else:
            assert error < 3e-7, (regime, error)


def test_compiled_loop_equals_the_torch_loop_for_a_batch_of_one_and_odd_shapes() -> None:
    from norton_losses import sinkhorn as sk
    from norton_losses import sinkhorn_cpu

    for p, m, n in [(1, 9, 9), (1, 5, 11), (37, 12, 4), (3, 7, 7), (2, 40, 30), (130, 1, 3)]:
        kernel, a, mu, nu = _scaling_inputs(p, m, n, seed=p * 100 + m)
        ours = sinkhorn_cpu.iterate(kernel, a.clone(), mu, nu, 30)
        torch_loop = sk._iterate_problems_last(kernel, a.clone(), mu, nu, 30)
        assert ours[0].shape == (p, m, 1) and ours[1].shape == (p, n, 1)
        for x, y in zip(ours, torch_loop, strict=True):
            torch.testing.assert_close(x, y, rtol=2e-5, atol=0, msg=str((p, m, n)))
        if p == 1:  # sinkhorn() itself sends one problem to the mv loop
            for x, y in zip(ours, sk._iterate(kernel, a.clone(), mu, nu, 30), strict=True):
                torch.testing.assert_close(x, y, rtol=2e-5, atol=0, msg=str((p, m, n)))
    # a zero column divides by zero: inf and NaN where the torch loop has them (the caller's finiteness check sends
    # such a problem to the log domain), never an exception
    kernel, a, mu, nu = _scaling_inputs(20, 6, 5, seed=9)
    kernel[3, :, 2] = 0.0
    ours = sinkhorn_cpu.iterate(kernel, a.clone(), mu, nu, 10)
    torch_loop = sk._iterate_problems_last(kernel, a.clone(), mu, nu, 10)
    assert not torch.isfinite(ours[1][3]).all() and torch.isfinite(ours[1][4:]).all()
    for x, y in zip(ours, torch_loop, strict=True):
        torch.testing.assert_close(x, y, rtol=2e-5, atol=0, equal_nan=True)
    g = torch.Generator().manual_seed(3)
    for p, m, n in [(37, 5, 11), (3, 12, 4)]:
        z = torch.rand(p, m, n, generator=g, dtype=torch.float64) * 20
        mu, nu = uniform_log_marginals(m, n, z.device)
        ref = sinkhorn_log_dense(z, mu.double(), nu.double(), 50).exp()
        assert (sinkhorn(z, mu, nu, 50).exp().double() - ref).abs().max().item() < 3e-7


def test_compiled_loop_is_bit_identical_whatever_the_threads_and_block_size() -> None:
    """Resume is bit-exact only if a plan does not depend on the thread count (run.threads) or on how problems are
    grouped; the loop follows torch's thread count."""
    import numba
    from norton_losses import sinkhorn_cpu

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba runs one thread on this machine")
    kernel, a, mu, nu = _scaling_inputs(1000, 9, 9, seed=4)  # 1000: the last block is partly filled
    threads = torch.get_num_threads()
    try:
        results = {}
        for count, lanes in [(1, None), (2, None), (2, 8), (1, 16)]:
            torch.set_num_threads(count)
            results[count, lanes] = sinkhorn_cpu.iterate(kernel, a, mu, nu, 50, lanes=lanes)
            assert numba.get_num_threads() == count
    finally:
        torch.set_num_threads(threads)
    first = results[1, None]
    for key, (x, y) in results.items():
        assert torch.equal(x, first[0]) and torch.equal(y, first[1]), key


CONCURRENT = """
import threading, torch
from norton_losses import sinkhorn_cpu
g = torch.Generator().manual_seed(5)
kernel, a, mu, nu = torch.rand(500, 9, 9, generator=g), *(torch.rand(500, 9, 1, generator=g) + 0.1 for _ in range(3))
reference = sinkhorn_cpu.iterate(kernel, a, mu, nu, 50)
results = []
workers = [threading.Thread(target=lambda: results.append(sinkhorn_cpu.iterate(kernel, a, mu, nu, 50)))
           for _ in range(4)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
assert len(results) == 4 and all(torch.equal(x, reference[0]) and torch.equal(y, reference[1]) for x, y in results)
print("ok")
"""


def test_compiled_loop_called_from_several_threads_at_once() -> None:
    """numba's workqueue threading layer aborts the process on concurrent launches; the module serialises them (in
    a subprocess, as an abort would take the test session with it)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", CONCURRENT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_importing_the_losses_does_not_import_numba() -> None:
    import subprocess
    import sys

    code = ("import sys, norton_losses, norton_losses.norton, norton_losses.sinkhorn; "
            "assert 'numba' not in sys.modules, 'numba imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_loop_without_a_writable_cache_warns_and_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """No cache directory numba can write (a read-only install and home): a warning, then the loop is compiled in
    the process (seconds) and gives the cached loop's result."""
    from norton_losses import sinkhorn_cpu
    from numba.core import caching

    kernel, a, mu, nu = _scaling_inputs(70, 9, 9, seed=6)
    reference = sinkhorn_cpu.iterate(kernel, a, mu, nu, 20)
    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    monkeypatch.setattr(sinkhorn_cpu, "_compiled", None)
    with pytest.warns(RuntimeWarning, match="cannot be cached on disk"):
        loop = sinkhorn_cpu._loop()
    assert isinstance(loop._cache, caching.NullCache)
    ours = sinkhorn_cpu.iterate(kernel, a, mu, nu, 20)
    assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])


def _alike(b: int, d: int = 8, t: int = 5) -> dict[str, torch.Tensor]:
    """Outputs of a model that tells nothing apart: every clip and every caption gets the same vectors."""
    g = torch.Generator().manual_seed(0)
    one = {"pooled_video": torch.randn(1, d, generator=g), "pooled_text": torch.randn(1, d, generator=g),
           "video_outputs": torch.randn(1, t, d, generator=g), "text_outputs": torch.randn(1, t, d, generator=g),
           "video_mask_outputs": torch.tensor([[True, True, True, False, False]]),
           "text_mask_outputs": torch.tensor([[True, True, False, False, False]])}
    return {k: v.expand(b, *v.shape[1:]).contiguous() for k, v in one.items()}


@pytest.mark.parametrize(("options", "clips", "video"), [
    ({}, 32, 2 * math.log(4)),  # K = 8: 4 sequences
    ({"faulty_negatives": False, "sequence_length": 4}, 16, 2 * math.log(4)),
    ({"sequence_length": 16}, 16, 0.0),  # one sequence: nothing to contrast
    ({"sequence_weight": 0.0}, 16, None),
])
def test_norton_loss_declares_the_value_it_takes_at_chance(options: dict, clips: int, video: float | None) -> None:
    loss = norton_core.build("loss", "norton", options)
    levels = loss.chance_levels(clips)
    terms = loss(_alike(clips), {})
    assert levels["clip_loss"] == pytest.approx(2 * math.log(clips))
    assert terms["clip_loss"].item() == pytest.approx(levels["clip_loss"], rel=1e-5)
    assert terms["loss"].item() == pytest.approx(levels["loss"], rel=1e-5, abs=1e-6)
    if video is None:
        assert "video_loss" not in levels and levels["loss"] == levels["clip_loss"]
    else:
        assert levels["video_loss"] == pytest.approx(video)
        assert terms["video_loss"].item() == pytest.approx(video, abs=1e-5)
        assert levels["loss"] == pytest.approx(levels["clip_loss"] + loss.config.sequence_weight * video)


def test_videoclip_nce_declares_2_ln_b_at_chance() -> None:
    loss = norton_core.build("loss", "videoclip-nce", {"temperature": 0.05})
    terms = loss(_alike(24), {})
    levels = loss.chance_levels(24)
    assert levels["loss"] == pytest.approx(2 * math.log(24)) and levels["v2t_loss"] == pytest.approx(math.log(24))
    for term in ("loss", "v2t_loss", "t2v_loss"):
        assert terms[term].item() == pytest.approx(levels[term], rel=1e-6)
