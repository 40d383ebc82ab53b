"""DiDeMo moment retrieval: the metric by hand and against the reference's algorithm, the chance levels, the
candidate moments and their pooling, the released layout and its dirty records."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from norton_evaluators.didemo import (
    MOMENTS,
    _rank_hit_probability,
    iou,
    moment_embeddings,
    moment_metrics,
    prior_rankings,
    random_ranking_chance,
)

from norton_core.errors import DataError
from norton_core.evaluation import run_evaluation
from tests.evaluation.fakes import FakeModel, concepts, eval_plugins


@pytest.fixture(scope="module")
def plugins():
    return eval_plugins()


def _run(model, root, plugins, **options):
    return run_evaluation(model, ["didemo"], root, plugins=plugins, progress=False,
                          options={"didemo": options} if options else None)


def reference_eval(segments, data):
    """LocalizingMoments' / the reference's ``_eval_predictions``, restated for the comparison."""
    def _iou(pred, gt):
        return max(0, min(pred[1], gt[1]) + 1 - max(pred[0], gt[0])) / (max(pred[1], gt[1]) + 1 - min(pred[0], gt[0]))

    average_ranks, average_iou = [], []
    for s, d in zip(segments, data, strict=True):
        average_iou.append(np.mean(np.sort([_iou(s[0], t) for t in d["times"]])[-3:]))
        ranks = [s.index(tuple(t)) + 1 for t in d["times"] if tuple(t) in s]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the mean of no ranks: NaN
            average_ranks.append(np.mean(np.sort(ranks)[:3]))
    ranks = np.array(average_ranks)
    with np.errstate(invalid="ignore"):
        return np.sum(ranks <= 1) / len(ranks), np.sum(ranks <= 5) / len(ranks), np.mean(average_iou)


def test_the_21_moments_in_the_reference_order():
    assert len(MOMENTS) == 21 and MOMENTS[:7] == ((0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (0, 1))
    assert MOMENTS[-1] == (4, 5) and len(set(MOMENTS)) == 21


def test_metric_by_hand():
    assert iou((1, 2), (2, 3)) == pytest.approx(1 / 3) and iou((0, 0), (2, 3)) == 0.0 and iou((4, 4), (4, 4)) == 1.0
    rest = [m for m in MOMENTS if m not in {(2, 2), (2, 3), (1, 1)}]
    rankings = [
        [(2, 2), (2, 3), *rest],  # annotations: (2,2) x3, (2,3): ranks 1,1,1,2 -> best three mean 1 -> R@1 hit
        [(2, 3), (2, 2), *rest],  # ranks 2,2,2,1 -> mean of 1,2,2 = 5/3: R@5 hit only
        [(1, 1), (2, 3), (2, 2), *rest],  # ranks 3,3,2,2 -> mean of 2,2,3 = 7/3
    ]
    times = [[(2, 2), (2, 2), (2, 2), (2, 3)]] * 2 + [[(2, 2), (2, 2), (2, 3), (2, 3)]]
    got = moment_metrics(rankings, times)
    # IoU of the top moment with each annotation, best three averaged: (1,1,1), (1/2,1/2,1), (0,0,0)
    assert got == pytest.approx({"R@1": 100 / 3, "R@5": 100.0, "mIoU": 100 * (1 + 2 / 3 + 0) / 3})
    data = [{"times": [list(t) for t in ts]} for ts in times]
    r1, r5, miou = reference_eval(rankings, data)
    assert got == pytest.approx({"R@1": 100 * r1, "R@5": 100 * r5, "mIoU": 100 * miou})


def test_an_unreachable_query_is_a_miss_as_in_the_reference():
    short = [m for m in MOMENTS if m[0] < 5]  # a 25 s video: moments starting in chunk 5 are dropped
    rankings, times = [short, short], [[(5, 5), (5, 5)], [short[0]] * 3]
    got = moment_metrics(rankings, times)
    r1, r5, miou = reference_eval(rankings, [{"times": [list(t) for t in ts]} for ts in times])
    assert got == pytest.approx({"R@1": 50.0, "R@5": 50.0, "mIoU": 50.0})
    assert got == pytest.approx({"R@1": 100 * r1, "R@5": 100 * r5, "mIoU": 100 * miou})


def test_metric_equals_the_reference_on_random_rankings():
    rng = np.random.default_rng(0)
    rankings, data = [], []
    for _ in range(200):
        chunks = int(rng.choice([6, 5, 4]))  # a short video loses the moments starting past its end
        valid = [m for m in MOMENTS if m[0] < chunks]
        order = [valid[i] for i in rng.permutation(len(valid))]
        marks = [MOMENTS[i] for i in rng.integers(0, 21, size=int(rng.integers(1, 5)))]
        rankings.append(order)
        data.append({"times": [list(t) for t in marks]})
    got = moment_metrics(rankings, [[tuple(t) for t in d["times"]] for d in data])
    r1, r5, miou = reference_eval(rankings, data)
    assert got == pytest.approx({"R@1": 100 * r1, "R@5": 100 * r5, "mIoU": 100 * miou})


@pytest.mark.parametrize("n, counts", [(21, (1,)), (21, (1, 1)), (21, (3, 1)), (21, (1, 1, 1, 1)), (6, (2, 2)),
                                       (5, (1, 1, 1, 1, 1))])
def test_random_ranking_chance_is_exact(n, counts):
    """Against every ordering of the annotated moments' places, enumerated outright."""
    import itertools

    hits1 = hits5 = total = 0
    for places in itertools.permutations(range(1, n + 1), len(counts)):
        best = sorted(p for p, c in zip(places, counts, strict=True) for _ in range(c))[:3]
        mean = sum(best) / len(best)
        hits1 += mean <= 1
        hits5 += mean <= 5
        total += 1
    assert _rank_hit_probability(n, counts) == pytest.approx((hits1 / total, hits5 / total))
    # by hand: one annotated moment among 21 is first with probability 1/21, in the first five with 5/21
    if counts == (1,):
        assert _rank_hit_probability(n, counts) == pytest.approx((1 / 21, 5 / 21))


def test_chance_and_prior_by_hand():
    two = [(0, 0), (1, 1)]  # a 5-10 s video: moments (0,0), (1,1), (0,1) are valid
    valid = [[(0, 0), (1, 1), (0, 1)]] * 3
    times = [[(0, 0)] * 3, [(0, 0)], two]
    chance = random_ranking_chance(valid, times)
    # query 1: R@1 1/3, R@5 1; query 2: the same; query 3: ranks of (0,0),(1,1) -> mean of both ranks:
    # {1,2} -> 1.5 (never <= 1), always <= 5
    assert chance["R@1_chance"] == pytest.approx(100 * (1 / 3 + 1 / 3 + 0) / 3)
    assert chance["R@5_chance"] == pytest.approx(100.0)
    # IoU of a random top moment: query 1 (1, 0, 1/2) -> 1/2; query 3: (0,0): best three of (1, 0) = 1/2,
    # (1,1): 1/2, (0,1): (1/2, 1/2) -> 1/2
    assert chance["mIoU_chance"] == pytest.approx(100 * (0.5 + 0.5 + 0.5) / 3)
    # the prior counts the other queries' marks: for query 2, (0,0) marked 3 + 1 times elsewhere comes first
    prior = prior_rankings(valid, times)
    assert prior[1][0] == (0, 0) and prior[0][0] == (0, 0) and prior[2] == [(0, 0), (1, 1), (0, 1)]


def test_moments_pool_padded_seconds_by_default_and_real_ones_on_request():
    tokens = np.zeros((32, 2))
    tokens[:27, 0] = 1.0  # 27 real seconds; padded outputs are 0 here
    ref, valid = moment_embeddings(tokens, 27, "reference")
    real, _ = moment_embeddings(tokens, 27, "valid")
    five = MOMENTS.index((5, 5))
    assert valid.all()  # chunk 5 starts at 25 < 27
    assert ref[five, 0] == pytest.approx(2 / 5) and real[five, 0] == 1.0
    assert ref[MOMENTS.index((4, 5)), 0] == pytest.approx(7 / 10)
    _, valid_short = moment_embeddings(tokens, 24, "reference")
    assert [m for m, ok in zip(MOMENTS, valid_short, strict=True) if not ok] == [(5, 5)]


# ----------------------------------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------------------------------


def make_didemo(root: Path, videos: int = 6, seed: int = 0) -> tuple[Path, list[dict]]:
    """``root/didemo``: 30 s videos of background concepts with two marked single-chunk moments each, moment k
    showing concept 800 + k; each query's sentence is ``w<800 + k>``, marked alike by four annotators. Marks:
    video 0 (1,1) (4,4); 1 (1,1) (5,5); 2 (1,1) (4,4); 3 (0,0) (5,5); 4 (1,1) (4,4); 5 (2,2) (5,5)."""
    rng = np.random.default_rng(seed)
    out = root / "didemo"
    (out / "features").mkdir(parents=True, exist_ok=True)
    c = concepts()
    queries, k = [], 0
    for v in range(videos):
        name = f"{10000 + v}@N0{v}_{v}.mov"
        feats = c[rng.integers(1900, 2000, size=30)].copy()
        for chunk in (v % 3, 5) if v % 2 else (1, 4):
            feats[chunk * 5:(chunk + 1) * 5] = c[800 + k]
            queries.append({"annotation_id": k, "video": name, "description": f"w{800 + k}",
                            "times": [[chunk, chunk]] * 4, "num_segments": 6})
            k += 1
        np.save(out / "features" / f"{name}.npy", feats.astype(np.float16))
    (out / "test_data.json").write_text(json.dumps(queries))
    return out, queries


def test_planted_model_finds_every_moment(tmp_path, plugins):
    make_didemo(tmp_path)
    results = _run(FakeModel(FakeModel.Config()), tmp_path, plugins)
    assert results["didemo/R@1"] == 100.0 and results["didemo/R@5"] == 100.0 and results["didemo/mIoU"] == 100.0
    assert results["didemo/queries"] == 12 and results["didemo/videos"] == 6
    assert results["didemo/R@1_chance"] == pytest.approx(100 / 21)
    assert results["didemo/R@5_chance"] == pytest.approx(500 / 21)
    assert results["didemo/unreachable"] == 0 and results["didemo/tied"] == 0
    assert all(v == 0 for k, v in results.items() if "/skipped_" in k)


def test_collapsed_model_ties_everything_and_is_counted(tmp_path, plugins):
    make_didemo(tmp_path)
    model = FakeModel(FakeModel.Config(planted=False))
    model.words.data.zero_()
    model.proj.data.zero_()
    results = _run(model, tmp_path, plugins)
    assert results["didemo/tied"] == 12
    # every score equal: the moments in their order, (0,0) first ... (5,5) sixth. Only video 3's (0,0) query is
    # a hit at 1 (and has IoU 1); the three (5,5) queries miss at 5
    assert results["didemo/R@1"] == pytest.approx(100 / 12)
    assert results["didemo/R@5"] == pytest.approx(75.0)
    assert results["didemo/mIoU"] == pytest.approx(100 / 12)


def test_pool_option_decides_a_moment_past_the_end(tmp_path, plugins):
    """A 27 s video: chunk 5 has 2 real seconds showing the sentence's concept; chunk 4 shows it at 0.6. With the
    padded seconds averaged in (the reference), chunk 5 scores 2/5 and loses to chunk 4; over real seconds it
    scores 1 and wins."""
    out, _ = make_didemo(tmp_path, videos=2)
    a = concepts()[900]
    feats = concepts()[np.arange(1900, 1927)].copy()
    feats[20:25] = 0.6 * a
    feats[25:27] = a
    np.save(out / "features" / "short.mov.npy", feats.astype(np.float32))
    queries = json.loads((out / "test_data.json").read_text())
    queries.append({"video": "short.mov", "description": "w900", "times": [[5, 5]] * 4})
    (out / "test_data.json").write_text(json.dumps(queries))
    model = FakeModel(FakeModel.Config())
    reference = _run(model, tmp_path, plugins)
    valid = _run(model, tmp_path, plugins, pool="valid")
    assert reference["didemo/queries"] == 5 and reference["didemo/R@1"] == pytest.approx(80.0)
    assert valid["didemo/R@1"] == 100.0


def test_dirty_records_are_skipped_counted_and_named(tmp_path, plugins, caplog):
    out, queries = make_didemo(tmp_path, videos=4)
    (out / "features" / f"{queries[0]['video']}.npy").unlink()  # queries 0 and 1: no features
    np.save(out / "features" / f"{queries[2]['video']}.npy", np.zeros((30, 100), np.float32))  # 2, 3: bad width
    queries[4]["description"] = "  "
    queries[5]["times"] = []
    (out / "test_data.json").write_text(json.dumps(queries))
    with caplog.at_level(logging.WARNING, logger="norton.evaluation"):
        results = _run(FakeModel(FakeModel.Config()), tmp_path, plugins)
    assert results["didemo/skipped_missing_features"] == 1 and results["didemo/skipped_bad_features"] == 1
    assert results["didemo/skipped_empty_description"] == 1 and results["didemo/skipped_no_times"] == 1
    assert results["didemo/queries"] == 2 and results["didemo/R@1"] == 100.0
    for needle in (queries[0]["video"], "query 4 (", "query 5 ("):
        assert needle in caplog.text, needle


def test_nothing_scorable_gives_nan(tmp_path, plugins):
    out, _ = make_didemo(tmp_path, videos=1)
    for p in (out / "features").iterdir():
        p.unlink()
    results = _run(FakeModel(FakeModel.Config()), tmp_path, plugins)
    assert math.isnan(results["didemo/R@1"]) and results["didemo/skipped_missing_features"] == 1
    assert math.isnan(results["didemo/R@1_chance"]) and math.isnan(results["didemo/prior_mIoU"])


@pytest.mark.parametrize("content, needle", [
    ('{"queries": []}', "expected a list of queries"),
    ('[{"video": "a.mov", "description": "x", "times": [[0, 6]]}]', "query 0: \"times\" entries"),
    ('[{"video": "a.mov", "description": "x", "times": [[3, 2]]}]', "query 0: \"times\" entries"),
    ('[{"video": "../a.mov", "description": "x", "times": [[0, 0]]}]', "query 0: \"video\""),
    ('[{"video": "a.mov", "times": [[0, 0]]}]', "query 0: \"description\""),
    ("[{", "not valid JSON"),
])
def test_a_file_not_in_the_released_layout_is_an_error_naming_it(tmp_path, plugins, content, needle):
    out = tmp_path / "didemo"
    (out / "features").mkdir(parents=True)
    (out / "test_data.json").write_text(content)
    with pytest.raises(DataError) as err:
        _run(FakeModel(FakeModel.Config()), tmp_path, plugins)
    assert str(out / "test_data.json") in str(err.value) and needle in str(err.value)


def reference_predictor_rankings(model, features: list[np.ndarray], texts: np.ndarray, max_video_len: int = 32):
    """The reference's ``DiDeMoPredictor`` restated: the video sequence as its aligner builds it, the encoder's
    outputs without the first and last token, the mean over ``[int(s * 5), int((e + 1) * 5))`` (padding included),
    a bmm with the pooled sentence, a descending sort, and moments kept when any of their seconds is real."""
    import torch

    vfeats = torch.zeros(len(features), max_video_len, 512)
    vmasks = torch.zeros(len(features), max_video_len, dtype=torch.bool)
    for i, f in enumerate(features):
        n = min(len(f), max_video_len)
        vfeats[i, :n] = torch.from_numpy(f[:n].astype(np.float32))
        vmasks[i, :n] = True
    with torch.no_grad():
        model.eval()
        hidden = model.forward_video(vfeats, vmasks)[1][:, 1:-1, :].double()
    pooled = torch.cat([hidden[:, int(s * 5):int((e + 1) * 5), :].mean(dim=1, keepdim=True) for s, e in MOMENTS], 1)
    scores = torch.bmm(pooled, torch.from_numpy(texts).double().unsqueeze(-1)).squeeze(-1)
    out = []
    for b, rank in enumerate(scores.argsort(dim=-1, descending=True, stable=True)):
        out.append([MOMENTS[m] for m in rank.tolist() if vmasks[b, MOMENTS[m][0] * 5:(MOMENTS[m][1] + 1) * 5].any()])
    return out


def test_the_evaluator_ranks_moments_as_the_reference_predictor(tmp_path, plugins):
    """A random model on videos of 30, 27 (padded last chunk) and 22 s (moments dropped): the same rankings, hence
    the same metrics, as the reference's predictor code restated."""
    from norton_core.evaluation.embed import encode_texts

    out, queries = make_didemo(tmp_path, videos=3)
    rng = np.random.default_rng(5)
    for name, length in (("short.mov", 27), ("shorter.mov", 22)):
        np.save(out / "features" / f"{name}.npy", rng.standard_normal((length, 512)).astype(np.float16))
        queries += [{"video": name, "description": f"w{810 + i}", "times": [[i, i]] * 3 + [[i, i + 1]]}
                    for i in range(5)]
    (out / "test_data.json").write_text(json.dumps(queries))
    model = FakeModel(FakeModel.Config(planted=False, seed=3))
    results = _run(model, tmp_path, plugins)
    feats = [np.load(out / "features" / f"{q['video']}.npy") for q in queries]
    texts = encode_texts(model, [q["description"] for q in queries], 64).astype(np.float64)
    times = [[tuple(t) for t in q["times"]] for q in queries]
    expected = moment_metrics(reference_predictor_rankings(model, feats, texts), times)
    assert results["didemo/tied"] == 0 and results["didemo/queries"] == 16
    assert results["didemo/unreachable"] == 0  # the 22 s video's chunk 4 starts at 20 s: every mark is reachable
    for metric in ("R@1", "R@5", "mIoU"):
        assert results[f"didemo/{metric}"] == pytest.approx(expected[metric]), metric
    assert 0 < results["didemo/R@5"] < 100  # a random model: the comparison is not trivially all hits or misses
