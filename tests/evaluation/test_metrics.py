"""Metric code on small cases worked by hand: ranks with ties, AUC, grounding windows, DTW and OTAM."""

from __future__ import annotations

import math

import numpy as np
import pytest
from norton_evaluators.htm_align import active_sentences, window_starts

from norton_core.evaluation.metrics import grounding_hits, rank_metrics, roc_auc
from norton_core.evaluation.sequence import (
    alignment_costs,
    alignment_scores,
    caption_average,
    centre_per_caption,
    reference_pad,
    select_windows,
)

# ----------------------------------------------------------------------------------------------------------------
# ranks
# ----------------------------------------------------------------------------------------------------------------

TIED = np.array([
    [0.9, 0.5, 0.9, 0.1],  # true 0: none better, one tie   -> ranks {0, 1}
    [0.2, 0.2, 0.2, 0.2],  # true 1: none better, three ties -> ranks {0..3}
    [0.3, 0.8, 0.1, 0.7],  # true 2: three better, no tie    -> rank 3
])


def test_rank_ties_expected_is_the_mean_over_random_tie_breaks():
    m = rank_metrics(TIED, np.array([0, 1, 2]), ks=(1, 2, 5))
    assert m["R@1"] == pytest.approx(100 * (1 / 2 + 1 / 4 + 0) / 3)
    assert m["R@2"] == pytest.approx(100 * (1 + 1 / 2 + 0) / 3)
    assert m["R@5"] == pytest.approx(100.0)
    assert m["MR"] == pytest.approx(1.5 + 1)  # median of mean ranks 0.5, 1.5, 3


def test_rank_ties_optimistic_and_pessimistic():
    opt = rank_metrics(TIED, np.array([0, 1, 2]), ks=(1, 2), ties="optimistic")
    pes = rank_metrics(TIED, np.array([0, 1, 2]), ks=(1, 2), ties="pessimistic")
    assert (opt["R@1"], opt["R@2"], opt["MR"]) == pytest.approx((200 / 3, 200 / 3, 1.0))
    assert (pes["R@1"], pes["R@2"], pes["MR"]) == pytest.approx((0.0, 100 / 3, 4.0))


def test_constant_scores_give_chance_not_a_lucky_tie_break():
    m = rank_metrics(np.zeros((10, 10)), np.arange(10))
    assert (m["R@1"], m["R@5"], m["R@10"], m["MR"]) == pytest.approx((10.0, 50.0, 100.0, 5.5))


def test_nan_scores_rank_last():
    m = rank_metrics(np.array([[math.nan, 0.5], [0.5, math.nan]]), np.array([0, 0]), ks=(1,))
    assert m["R@1"] == pytest.approx(50.0)


def test_perfect_and_reversed_rankings():
    scores = np.eye(20) + 0.01 * np.arange(20)[None, :]
    assert rank_metrics(scores, np.arange(20))["R@1"] == 100.0
    worst = rank_metrics(-np.eye(20), np.arange(20))
    assert worst["R@10"] == 0.0 and worst["MR"] == 20.0


# ----------------------------------------------------------------------------------------------------------------
# AUC and HTM-Align grounding
# ----------------------------------------------------------------------------------------------------------------


def test_roc_auc_by_hand_with_a_tie():
    # positives 0.9 (beats 3 negatives) and 0.4 (ties 0.4, beats 0.1): (3 + 1.5) / 6
    assert roc_auc(np.array([0.9, 0.8, 0.4, 0.4, 0.1]), np.array([1, 0, 1, 0, 0])) == pytest.approx(75.0)
    assert roc_auc(np.array([-np.inf, -np.inf, 1.0]), np.array([1, 0, 1])) == pytest.approx(75.0)
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


@pytest.mark.parametrize("best, hit", [(1, False), (2, True), (3, True), (5, True), (6, False)])
def test_grounding_window_is_floor_start_to_ceil_end_inclusive(best, hit):
    sim = np.full((1, 10), 0.1)
    sim[0, best] = 0.9
    assert grounding_hits(sim, np.array([2.5]), np.array([4.2]))[0] == hit


def test_unscored_sentence_is_a_miss_even_at_second_zero():
    sim = np.full((2, 5), -np.inf)
    sim[1, 0] = 0.3
    assert grounding_hits(sim, np.array([0.0, 0.0]), np.array([2.0, 2.0])).tolist() == [False, True]


def test_htm_windows_and_their_sentences():
    assert window_starts(100, 32, 8).tolist() == list(range(0, 84, 8))
    assert window_starts(16, 32, 8).tolist() == [0]  # the reference's arange would give no window at all
    mids = np.array([5.0, 20.0, 40.0, 60.0, 90.0, 130.0])
    alignable = np.array([False, True, False, True, False, False])
    # window 5 of 10 starting at 40 s: non-alignable mids in [8, 104] are sentences 2 and 4 -> range 2..4
    assert active_sentences(5, 40, 10, mids, alignable, 32, 4).tolist() == [2, 3, 4]
    # the first windows reach back to sentence 0 (here already in range), the last ones forward to the last
    assert active_sentences(1, 8, 10, mids, alignable, 32, 4).tolist() == [0, 1, 2]
    assert active_sentences(3, 60, 10, mids, alignable, 32, 4).tolist() == [0, 1, 2, 3, 4]  # widened from 2..4
    assert active_sentences(4, 60, 10, mids, alignable, 32, 4).tolist() == [2, 3, 4]  # not an edge window
    assert active_sentences(9, 72, 10, mids, alignable, 32, 4).tolist() == [2, 3, 4, 5]
    assert active_sentences(5, 400, 10, mids, alignable, 32, 4).tolist() == []


# ----------------------------------------------------------------------------------------------------------------
# DTW and OTAM
# ----------------------------------------------------------------------------------------------------------------

A = np.array([[1.0, 3.0, 5.0], [2.0, 1.0, 4.0], [6.0, 2.0, 1.0]])
B = np.array([[1.0, 2.0], [3.0, 1.0], [2.0, 2.0], [1.0, 5.0]])  # 4 captions x 2 clips


def test_dtw_3x3_and_4x2_by_hand():
    # A: cumulative table rows (1 4 9) (3 2 6) (9 4 3); B: (1 3) (4 2) (6 4) (7 9)
    assert alignment_costs([A], "dtw")[0] == pytest.approx(3.0)
    assert alignment_costs([B], "dtw")[0] == pytest.approx(9.0)
    # blocks of different shapes stacked together give the same costs
    assert alignment_costs([A, B, B.T], "dtw") == pytest.approx([3.0, 9.0, 9.0])


def test_otam_3x3_by_hand():
    # forward: clips 1, 2, 3 to captions 0, 1, 2 cost 1 + 1 + 1; backward (transposed) likewise 3
    assert alignment_costs([A], "otam")[0] == pytest.approx(6.0)


def test_otam_4x2_by_hand_and_the_reference_sign_slip():
    # distances -B: forward table ends at -12 (column 1 takes captions 0-3: -7, column 2 caption 3: -5),
    # backward at -11; the reference's "dist - min" in column 1 gives -6 forward (backward unchanged)
    assert alignment_costs([-B], "otam")[0] == pytest.approx(-23.0)
    assert alignment_costs([-B], "otam", recurrence="reference")[0] == pytest.approx(-17.0)
    # with non-negative cumulative costs the slip changes nothing
    assert alignment_costs([B], "otam", recurrence="reference")[0] == alignment_costs([B], "otam")[0]


def test_reference_padding_zeroes_the_exit_region_and_more():
    inf = np.inf
    padded = reference_pad(B, 5, 3)
    expected = np.array([[1, 2, inf], [3, 1, inf], [2, 2, inf], [1, 5, 0], [inf, inf, 0]])
    np.testing.assert_array_equal(padded, expected)
    # the free pad cell right of the last clip is reachable diagonally from caption 2: the last caption is skipped
    assert alignment_costs([B], "dtw", padding="reference", pad_shape=(5, 3))[0] == pytest.approx(4.0)
    # the largest block (no padding) gets its whole last row zeroed by the "-0:" slice
    np.testing.assert_array_equal(reference_pad(B, 4, 2)[-1], [0.0, 0.0])
    assert alignment_costs([B], "dtw", padding="reference", pad_shape=(4, 2))[0] == pytest.approx(4.0)


def test_reference_otam_canvas_of_a_full_size_3x3_block():
    # the pad sizes (0, 0) are taken before the two zero columns: the canvas is 3 x 5, no real column is cropped,
    # and the "-0:" slice zeroes the whole last row
    np.testing.assert_array_equal(reference_pad(A, 3, 3, otam=True),
                                  [[0, 1, 3, 5, 0], [0, 2, 1, 4, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(reference_pad(A.T, 3, 3, otam=True),
                                  [[0, 1, 2, 6, 0], [0, 3, 1, 2, 0], [0, 0, 0, 0, 0]])
    # the free last row is reached from column 0 (free) at no cost: both directions cost 0
    assert alignment_costs([A], "otam", padding="reference", pad_shape=(3, 3))[0] == 0.0
    # distances -S: forward row 0 (0 -3 -4 -4 -4), row 1 (0 -4 -7 -8 -8), row 2 ends at -8; S is symmetric
    s = np.array([[3.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 3.0]])
    assert alignment_costs([-s], "otam", padding="reference", pad_shape=(3, 3))[0] == pytest.approx(-16.0)
    # the sign slip: row 1 becomes (0 2 -6 -7 -7), row 2 ends at -7
    assert alignment_costs([-s], "otam", padding="reference", pad_shape=(3, 3),
                           recurrence="reference")[0] == pytest.approx(-14.0)


def test_reference_otam_canvas_of_a_3x3_block_padded_to_4x4():
    inf = np.inf
    # pads (1, 1): one +inf row and column beyond the two zero columns; rows 2: and column 5 are zeroed
    np.testing.assert_array_equal(reference_pad(A, 4, 4, otam=True),
                                  [[0, 1, 3, 5, 0, inf], [0, 2, 1, 4, 0, inf], [0, 6, 2, 1, 0, 0],
                                   [inf, inf, inf, inf, inf, 0]])
    # the exit goes through the free corner column: the diagonal 1 + 1 + 1 in each direction, as unpadded
    assert alignment_costs([A], "otam", padding="reference", pad_shape=(4, 4))[0] == pytest.approx(6.0)
    assert alignment_costs([A], "otam")[0] == pytest.approx(6.0)


def test_reference_otam_canvas_of_a_4x2_block():
    inf = np.inf
    # padded to (4, 4): pads (0, 2); the last row's pad cells are zeroed, the block keeps both real columns
    np.testing.assert_array_equal(reference_pad(B, 4, 4, otam=True),
                                  [[0, 1, 2, 0, inf, inf], [0, 3, 1, 0, inf, inf], [0, 2, 2, 0, inf, inf],
                                   [0, 1, 5, 0, 0, 0]])
    # transposed (2 x 4), pads (2, 0): "-0:" zeroes rows 1: entirely, so that direction is free
    np.testing.assert_array_equal(reference_pad(B.T, 4, 4, otam=True),
                                  [[0, 1, 3, 2, 1, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    # forward rows: (0 1 3 3 inf inf) (0 3 2 2 inf inf) (0 2 4 2 inf inf) (0 1 6 4 2 2): cost 2; backward 0
    assert alignment_costs([B], "otam", padding="reference", pad_shape=(4, 4))[0] == pytest.approx(2.0)
    # at its own size (pads (0, 0)): a 4 x 4 canvas whose last row is zero
    np.testing.assert_array_equal(reference_pad(B, 4, 2, otam=True),
                                  [[0, 1, 2, 0], [0, 3, 1, 0], [0, 2, 2, 0], [0, 0, 0, 0]])


def test_background_kept_reference_otam_at_the_largest_window_count():
    """A 3-caption paragraph keeps int(1.3 * 3) = 3 windows of a 3-window video, the largest window count: the
    reference canvas keeps all three windows (3 x 5, last row zero) instead of cropping real columns."""
    s = np.array([[3.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 3.0]])
    sims = np.zeros((5, 5))
    sims[:3, :3] = s
    sims[3:, 3:] = [[2.0, 0.0], [0.0, 2.0]]
    text_groups = [np.arange(3), np.arange(3, 5)]
    clip_groups = [np.arange(3), np.arange(3, 5)]
    scores = alignment_scores(sims, text_groups, clip_groups, "otam", scale="max", select_ratio=1.3,
                              padding="reference", chunk_bytes=1)
    # pair (0, 0): factor max(3, 3) / max(3, 3) = 1, the hand-worked -S canvas above: cost -16
    assert scores[0, 0] == pytest.approx(16.0)
    ref = alignment_scores(sims, text_groups, clip_groups, "otam", scale="max", select_ratio=1.3,
                           padding="reference", recurrence="reference")
    assert ref[0, 0] == pytest.approx(14.0)
    # every pair agrees with the block-by-block canvas
    for i, rows in enumerate(text_groups):
        for j, cols in enumerate(clip_groups):
            block = sims[np.ix_(rows, cols)]
            block = block[:, select_windows(block, 1.3)]
            factor = 3 / max(block.shape)
            cost = alignment_costs([-block * factor], "otam", padding="reference", pad_shape=(3, 3))[0]
            assert scores[i, j] == pytest.approx(-cost)


def test_caption_average_by_hand():
    sims = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.4], [0.0, 0.6, 0.7]])
    groups_t = [np.array([0, 1]), np.array([2])]
    groups_c = [np.array([0, 1]), np.array([2])]
    expected = [[(0.9 + 0.8) / 2, (0.3 + 0.4) / 2], [0.6, 0.7]]
    np.testing.assert_allclose(caption_average(sims, groups_t, groups_c), expected)


def test_background_window_selection_keeps_best_windows_in_time_order():
    block = np.array([[0.1, 0.9, 0.2, 0.0, 0.3], [0.0, 0.1, 0.8, 0.0, 0.1]])
    assert select_windows(block, 1.3).tolist() == [1, 2]  # int(1.3 * 2) = 2
    assert select_windows(np.vstack([block, block[:1]]), 1.3).tolist() == [1, 2, 4]  # int(3.9) = 3
    assert select_windows(block[:, :1], 1.3).tolist() == [0]  # fewer windows than asked: all


def _paragraphs(seed: int):
    rng = np.random.default_rng(seed)
    sizes = [3, 5, 2, 7, 4, 6, 3, 5]
    text_groups, clip_groups, start_t, start_c = [], [], 0, 0
    for n in sizes:
        m = n + int(rng.integers(0, 4))
        text_groups.append(np.arange(start_t, start_t + n))
        clip_groups.append(np.arange(start_c, start_c + m))
        start_t, start_c = start_t + n, start_c + m
    sims = rng.standard_normal((start_t, start_c)) + 2.0 * rng.random((start_t, 1))  # per-caption biases
    for g_t, g_c in zip(text_groups, clip_groups, strict=True):  # a weak diagonal signal
        sims[np.ix_(g_t, g_c)] += 0.7
    return sims, text_groups, clip_groups


@pytest.mark.parametrize("method", ["dtw", "otam"])
@pytest.mark.parametrize("select", [None, 1.3])
def test_centred_scores_do_not_move_when_a_constant_is_added(method, select):
    sims, tg, cg = _paragraphs(0)
    targets = np.arange(len(tg))
    reference, centred = {}, {}
    for shift in (-5.0, 0.0, 5.0):
        shifted = sims + shift
        reference[shift] = rank_metrics(alignment_scores(shifted, tg, cg, method, select_ratio=select), targets)
        centred[shift] = alignment_scores(centre_per_caption(shifted), tg, cg, method, select_ratio=select)
    # the reference distances (-sim) are not shift-invariant: the same similarities rank differently
    assert len({tuple(r.values()) for r in reference.values()}) > 1
    np.testing.assert_allclose(centred[-5.0], centred[0.0], atol=1e-9)
    np.testing.assert_allclose(centred[5.0], centred[0.0], atol=1e-9)


def test_centring_removes_each_captions_mean():
    sims, _, _ = _paragraphs(1)
    np.testing.assert_allclose(centre_per_caption(sims).mean(axis=1), 0.0, atol=1e-12)


@pytest.mark.parametrize("method", ["dtw", "otam"])
@pytest.mark.parametrize("padding, recurrence", [("exact", "exact"), ("reference", "reference")])
@pytest.mark.parametrize("select, scale", [(None, "product"), (1.3, "max")])
def test_vectorised_scores_match_block_by_block_costs(method, padding, recurrence, select, scale):
    """alignment_scores (all pairs at once, in chunks) agrees with alignment_costs on each block built by hand."""
    sims, tg, cg = _paragraphs(2)
    max_rows, max_cols = max(len(g) for g in tg), max(len(g) for g in cg)
    fast = alignment_scores(sims, tg, cg, method, offset=1.5, scale=scale, select_ratio=select, padding=padding,
                            recurrence=recurrence, chunk_bytes=1)  # one paragraph per chunk
    for i, rows in enumerate(tg):
        blocks = []
        for cols in cg:
            block = sims[np.ix_(rows, cols)]
            if select is not None:
                block = block[:, select_windows(block, select)]
            n, m = block.shape
            factor = max_rows * max_cols / (n * m) if scale == "product" else max(max_rows, max_cols) / max(n, m)
            blocks.append((1.5 - block) * factor)
        slow = alignment_costs(blocks, method, padding=padding, pad_shape=(max_rows, max_cols), recurrence=recurrence)
        np.testing.assert_allclose(fast[i], -slow, rtol=1e-12, atol=1e-9)
