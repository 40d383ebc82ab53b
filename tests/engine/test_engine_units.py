"""Unit tests of the engine's parts: lr schedule, checkpoint commit/validation/retention, retrieval helpers and
the built-in retrieval backends."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from norton_core.engine import checkpoint as ckpt
from norton_core.engine import resume, state_files
from norton_core.engine.config import TrainConfig
from norton_core.engine.retrieval import check_results, exact_knn, neighbour_batches, neighbour_recall
from norton_core.engine.schedule import learning_rate
from norton_core.errors import CheckpointError, PluginError

# ------------------------------------------------------------------------------------------------------------------
# schedule
# ------------------------------------------------------------------------------------------------------------------


def test_schedule_warms_up_linearly_then_decays_polynomially():
    cfg = TrainConfig(lr=1.0, warmup_updates=4, total_updates=14, end_lr=0.0, power=1.0)
    lrs = [learning_rate(cfg, s) for s in range(16)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and lrs[9] == pytest.approx(0.5) and lrs[14] == 0.0 and lrs[15] == 0.0
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    squared = TrainConfig(lr=1.0, warmup_updates=0, total_updates=10, power=2.0)
    assert learning_rate(squared, 5) == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------------------------


def _files(step: int) -> dict[str, bytes]:
    return {"model.safetensors": state_files.tensors_to_bytes({"w": torch.full((3,), float(step))}),
            "state.json": json.dumps({"step": step}).encode()}


def test_commit_writes_manifest_latest_and_keeps_last_n(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        path = ckpt.save_checkpoint(root, step, _files(step), keep_last=2, log=lambda m: None)
    assert path == root / "step-4"
    assert (root / "latest").read_text().strip() == "step-4"
    assert [p.name for _, p in ckpt.committed_steps(root)] == ["step-3", "step-4"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "state.json"}
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    found, files = ckpt.find_latest(root, log=lambda m: None)
    assert found == path and state_files.bytes_to_tensors(files["model.safetensors"])["w"][0] == 4.0


@pytest.mark.parametrize("damage", ["truncate1", "truncate_half", "empty", "flip", "no_manifest", "missing_file"])
def test_damaged_newest_checkpoint_falls_back_to_previous(tmp_path, damage):
    """B1-B3: a damaged newest checkpoint is refused with the file named, skipped by auto-resume, not deleted."""
    root = tmp_path / "checkpoints"
    for step in (1, 2):
        ckpt.save_checkpoint(root, step, _files(step), keep_last=5, log=lambda m: None)
    target = root / "step-2" / "model.safetensors"
    data = target.read_bytes()
    if damage == "truncate1":
        target.write_bytes(data[:-1])
    elif damage == "truncate_half":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "flip":
        target.write_bytes(data[:-2] + bytes([data[-2] ^ 0xFF]) + data[-1:])
    elif damage == "no_manifest":
        (root / "step-2" / "manifest.json").unlink()
    else:
        target.unlink()
    with pytest.raises(CheckpointError) as err:
        ckpt.read_checkpoint(root / "step-2")
    assert "step-2" in str(err.value)
    messages: list[str] = []
    found, _ = ckpt.find_latest(root, log=messages.append)
    assert found == root / "step-1"
    assert any("skipping checkpoint step-2" in m for m in messages)
    assert (root / "step-2").exists()


def test_latest_pointer_to_missing_dir_falls_back_to_scan(tmp_path):
    """B4."""
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 5, _files(5), keep_last=5, log=lambda m: None)
    (root / "latest").write_text("step-9\n")
    assert ckpt.find_latest(root, log=lambda m: None)[0] == root / "step-5"


def test_retention_never_follows_symlinks_and_ignores_foreign_names(tmp_path):
    """B7/B8: only our own step-<N> entries are purged; a symlink is unlinked, its target untouched."""
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / "step-0").symlink_to(outside)
    (root / "notes").mkdir()
    for step in (1, 2, 3):
        ckpt.save_checkpoint(root, step, _files(step), keep_last=1, log=lambda m: None)
    assert (outside / "keep.txt").exists()
    assert (root / "notes").exists()
    assert [p.name for _, p in ckpt.committed_steps(root)] == ["step-3"]


def test_staging_leftovers_are_cleaned_and_reported(tmp_path):
    """A2: a kill mid-write leaves only hidden staging dirs, which the next start removes and reports."""
    root = tmp_path / "checkpoints"
    (root / ".staging-step-7-123-abcd").mkdir(parents=True)
    (root / ".staging-step-7-123-abcd" / "model.safetensors").write_bytes(b"partial")
    messages: list[str] = []
    assert ckpt.recover(root, log=messages.append) == ["removed .staging-step-7-123-abcd"]
    assert messages and not any(root.iterdir())


def test_npy_loading_refuses_pickled_objects(tmp_path):
    """J3/E5: candidate batches are plain int64 .npy; an object array (a pickle) is refused with no side effect."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import io

    buf = io.BytesIO()
    np.save(buf, np.array([Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError):
        state_files.load_npy(buf.getvalue())
    assert not marker.exists()
    good = state_files.npy_bytes(np.arange(6, dtype=np.int64).reshape(2, 3))
    assert good.startswith(b"\x93NUMPY")
    assert state_files.load_npy(good).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_optimizer_state_round_trips_through_safetensors():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.9, 0.98))
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    tensors, groups = state_files.optimizer_to_tensors(opt)
    data = state_files.tensors_to_bytes(tensors)
    json.dumps(groups)
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    opt2 = torch.optim.Adam(twin.parameters(), lr=0.1)
    state_files.optimizer_from_tensors(opt2, state_files.bytes_to_tensors(data), groups)
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (twin, opt2)):
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(model.weight, twin.weight)


def test_recipe_changes_need_permission_per_key():
    old = {"train": {"lr": 1e-3, "epochs": 2}, "model": {"hidden": 8}, "source": "a.toml"}
    new = {"train": {"lr": 1e-4, "epochs": 3}, "model": {"hidden": 8}, "source": "b.toml"}
    changes, problems = resume.recipe_changes(old, new, ())
    assert changes == [] and problems == ["train.epochs: 2 -> 3", "train.lr: 0.001 -> 0.0001"]
    changes, problems = resume.recipe_changes(old, new, ("train.lr",))
    assert [c["key"] for c in changes] == ["train.lr"] and problems == ["train.epochs: 2 -> 3"]
    changes, problems = resume.recipe_changes(old, new, ("train",))
    assert len(changes) == 2 and problems == []


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".."])
def test_run_names_cannot_escape_the_output_dir(name):
    with pytest.raises(CheckpointError):
        ckpt.check_run_name(name)


def test_run_lock_refuses_a_second_holder(tmp_path):
    first = ckpt.RunLock(tmp_path)
    first.acquire()
    with pytest.raises(CheckpointError, match="locked by pid"):
        ckpt.RunLock(tmp_path).acquire()
    first.release()
    second = ckpt.RunLock(tmp_path)
    second.acquire()
    second.release()


def test_forked_children_do_not_keep_the_run_lock(tmp_path):
    """H1: a DataLoader worker outliving a SIGKILLed trainer must not keep the run locked."""
    import os

    lock = ckpt.RunLock(tmp_path)
    lock.acquire()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the lock descriptor must already be closed
        try:
            os.fstat(lock.fd)
            os._exit(1)
        except OSError:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    with pytest.raises(CheckpointError):  # the parent still holds it
        ckpt.RunLock(tmp_path).acquire()
    lock.release()
    assert os.waitstatus_to_exitcode(status) == 0


# ------------------------------------------------------------------------------------------------------------------
# retrieval
# ------------------------------------------------------------------------------------------------------------------


def test_exact_knn_matches_brute_force_and_pads():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    got = exact_knn(x, x[:7], 5)
    dist = ((x[:7, None, :] - x[None]) ** 2).sum(-1)
    assert (got == np.argsort(dist, axis=1, kind="stable")[:, :5]).all()
    assert (got[:, 0] == np.arange(7)).all()
    padded = exact_knn(x[:3], x[:1], 5)
    assert padded.shape == (1, 5) and (padded[0, 3:] == -1).all() and sorted(padded[0, :3]) == [0, 1, 2]


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_knn_blocks_merge_to_brute_force_with_ties(metric, monkeypatch):
    """Many database blocks and query chunks give the brute-force order exactly: small integer vectors make the
    scores exact in float32, with many ties, ordered by index."""
    import norton_core.neighbours as nb

    monkeypatch.setattr(nb, "_MIN_BLOCK", 16)
    monkeypatch.setattr(nb, "_SCORE_ELEMENTS", 1 << 9)
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, size=(300, 5)).astype(np.float32)
    q = x[rng.choice(300, 21, replace=False)] + rng.integers(-1, 2, size=(21, 5)).astype(np.float32)
    exact = (q.astype(np.int64) @ x.T.astype(np.int64)) * -1
    if metric == "l2":
        exact = exact * 2 + (x.astype(np.int64) ** 2).sum(1)
    s, i = nb.knn_scores(x, q, 40, metric)
    assert (i == np.argsort(exact, axis=1, kind="stable")[:, :40]).all()
    assert (s == np.take_along_axis(exact, i, 1)).all()
    s, i = nb.knn_scores(x[:30], q, 40, metric)  # more than the database holds: padded with (inf, -1)
    assert (i[:, 30:] == -1).all() and np.isinf(s[:, 30:]).all() and (np.sort(i[:, :30], 1) == np.arange(30)).all()
    # a subset of the rows, gathered block by block, is searched as if it had been passed itself; indices are
    # positions in the subset, with or without the full matrix's norms
    members = np.sort(rng.choice(300, 170, replace=False))
    alone = nb.knn_scores(x[members], q, 40, metric)
    monkeypatch.setattr(nb, "_GATHER_ROWS", 7)  # gathered blocks shorter than the product's own
    for norms in (None, nb.row_norms(x)):
        s, i = nb.knn_scores(x, q, 40, metric, norms, members=members)
        assert (i == alone[1]).all() and (s == alone[0]).all()


def test_running_smallest_equals_a_full_sort_over_many_blocks_with_ties_and_nan(monkeypatch):
    """The compiled selection keeps each query's k smallest (score, row) pairs over blocks given in row order, ties
    by the smaller row, whatever the block sizes; its buffer is cut back many times (a small buffer factor), NaN
    scores are never kept and a query with fewer than k finite scores gets (inf, -1) padding."""
    import norton_core.smallest_k as sk

    monkeypatch.setattr(sk, "BUFFER_FACTOR", 2)
    rng = np.random.default_rng(7)
    for trial in range(40):
        n, q, k = int(rng.integers(1, 600)), int(rng.integers(1, 7)), int(rng.integers(1, 50))
        scores = rng.integers(-6, 6, size=(n, q)).astype(np.float32)  # few distinct values: many ties
        if trial % 3 == 0:
            scores[rng.random((n, q)) < 0.2] = np.nan
        best, start = sk.RunningSmallest(q, k), 0
        while start < n:
            rows = int(rng.integers(1, 90))
            best.add(np.ascontiguousarray(scores[start:start + rows]), start)
            start += rows
        values, rows = best.result()
        for j in range(q):
            finite = np.flatnonzero(~np.isnan(scores[:, j]))
            expected = finite[np.lexsort((finite, scores[finite, j]))][:k]
            assert (rows[j, :len(expected)] == expected).all(), (trial, j)
            assert (values[j, :len(expected)] == scores[expected, j]).all()
            assert (rows[j, len(expected):] == -1).all() and np.isinf(values[j, len(expected):]).all()
    with pytest.raises(ValueError, match="C-contiguous float32"):
        sk.RunningSmallest(3, 2).add(np.zeros((4, 3)), 0)


def test_a_compile_is_said_on_stderr_and_a_cache_load_is_not(capsys):
    from norton_core.compiled import COMPILE_NOTICE_SECONDS, say_if_compiled

    say_if_compiled("test loop", COMPILE_NOTICE_SECONDS / 4)
    assert capsys.readouterr().err == ""
    say_if_compiled("test loop", COMPILE_NOTICE_SECONDS + 1.5)
    err = capsys.readouterr().err
    assert f"compiled the test loop (numba) in {COMPILE_NOTICE_SECONDS + 1.5:.1f}s" in err and "numba's cache" in err


def test_sorted_pairs_orders_like_lexsort_with_signed_zeros_infinities_and_huge_rows(monkeypatch):
    """The packed sort of a selection's result equals np.lexsort on (value, row): negative, -0.0 = 0.0 (then by
    row), -inf first, the (inf, -1) empty slots last; rows too large to pack go through lexsort itself."""
    import norton_core.smallest_k as sk

    rng = np.random.default_rng(3)
    values = rng.choice(np.array([-2.5, -0.0, 0.0, 1e-30, -1e-30, 3.0, 1e30, -np.inf], np.float32), size=(50, 12))
    rows = rng.permutation(50 * 12).reshape(50, 12).astype(np.int64)
    values[:, -2:], rows[:, -2:] = np.inf, -1
    order = np.lexsort((rows, values), axis=1)
    want = np.take_along_axis(values, order, 1), np.take_along_axis(rows, order, 1)
    got = sk.sorted_pairs(values, rows)
    assert (got[1] == want[1]).all() and (got[0] == want[0]).all()
    monkeypatch.setattr(sk, "_PACKED_ROWS", 10)  # as if rows did not fit in 32 bits
    got = sk.sorted_pairs(values, rows)
    assert (got[1] == want[1]).all() and (got[0] == want[0]).all()


def test_a_round_refuses_non_finite_embeddings_naming_the_videos():
    """A NaN or infinite video vector would land in an arbitrary cell: the round stops with the store indices.
    Huge finite values whose block sum overflows are not flagged."""
    from norton_core.engine.distributed import Dist
    from norton_core.engine.retrieval import _FINITE_ROWS, check_finite, non_finite_rows
    from norton_core.errors import TrainingError

    x = np.ones((3 * _FINITE_ROWS + 5, 4), dtype=np.float32)
    x[:_FINITE_ROWS] = 3e38  # each row finite, the block's sum not
    assert len(non_finite_rows(x)) == 0
    ids = np.arange(len(x)) + 100
    check_finite(x, ids, Dist())
    x[[7, _FINITE_ROWS + 3, len(x) - 1], [0, 2, 3]] = [np.nan, np.inf, -np.inf]
    assert non_finite_rows(x).tolist() == [7, _FINITE_ROWS + 3, len(x) - 1]
    with pytest.raises(TrainingError, match=rf"3 video embedding\(s\) are not finite .*store indices 107, "
                                            rf"{_FINITE_ROWS + 103}, {len(x) + 99}\)"):
        check_finite(x, ids, Dist())


def test_neighbour_batches_handle_short_lists_and_minus_one():
    rng = random.Random(0)
    found = np.array([[0, 5, -1, -1, -1, -1], [1, 2, 3, 4, 6, 7], [2, 2, 2, -1, -1, -1]])
    batches = neighbour_batches(found, np.array([0, 1, 2]), 4, 10, rng)
    assert batches.shape == (3, 4)
    for row, q in zip(batches, (0, 1, 2), strict=True):
        assert q in row or len(set(row.tolist())) == 4
        assert len(set(row.tolist())) == 4 and all(0 <= v < 10 for v in row)
    assert {0, 5} <= set(batches[0].tolist())
    assert set(batches[1].tolist()) <= {1, 2, 3, 4, 6, 7}


def test_backend_results_are_validated_at_the_plugin_boundary():
    class Bad:
        name = "bad"

    with pytest.raises(PluginError, match="bad.*shape"):
        check_results(np.zeros((2, 3), np.int64), 2, 4, 10, Bad())
    with pytest.raises(PluginError, match="outside"):
        check_results(np.full((2, 4), 10, np.int64), 2, 4, 10, Bad())
    with pytest.raises(PluginError, match="dtype"):
        check_results(np.zeros((2, 4), np.float32), 2, 4, 10, Bad())


def test_builtin_backends_find_cluster_mates():
    from norton_retrieval import Exact, ExactConfig, FaissIVF, FaissIVFConfig

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 16)) * 10
    x = (centres[np.arange(400) % 8] + rng.normal(size=(400, 16))).astype(np.float32)
    ids = np.arange(400)
    exact = Exact(ExactConfig())
    exact.build(x, ids)
    ivf = FaissIVF(FaissIVFConfig(nlist=8, nprobe=1), seed=0)
    ivf.build(x, ids)
    for backend in (exact, ivf):
        found = backend.search(np.arange(0, 400, 37), 20)
        assert found.shape == (11, 20) and found.dtype == np.int64
        same = (found % 8 == (np.arange(0, 400, 37) % 8)[:, None]) | (found < 0)
        assert same.mean() > 0.95
    assert neighbour_recall(exact, x, 10, 20, random.Random(0)) == (1.0, 0.0)
    assert neighbour_recall(ivf, x, 10, 20, random.Random(0))[0] > 0.3
    tiny = FaissIVF(FaissIVFConfig(nlist=512), seed=0)  # more lists than vectors: capped, still answers
    tiny.build(x[:5], np.arange(5))
    assert (tiny.search(np.arange(5), 3)[:, 0] == np.arange(5)).all()


def test_recall_comes_with_its_standard_error_over_the_sampled_queries():
    """Two sampled queries, one answered exactly and one with half its neighbours wrong: recall 0.75, standard
    error std([1, 0.5], ddof=1) / sqrt(2) = 0.25; the log line says how many queries it rests on."""
    from norton_core.engine.retrieval import describe_recall

    x = np.arange(10, dtype=np.float32).reshape(10, 1)

    class HalfWrong:
        name = "half-wrong"

        def search(self, queries, k):
            found = exact_knn(x, x[queries], k)
            found[-1, 1] = (found[-1, 0] + 5) % 10  # not among the last query's 2 nearest
            return found

    value, se = neighbour_recall(HalfWrong(), x, 2, 2, random.Random(0))
    assert (value, se) == (0.75, pytest.approx(0.25))
    assert describe_recall({"recall": value, "recall_se": se, "videos": 10}, 2) == "0.750 +- 0.250 over 2 queries"
    assert describe_recall({"recall": 1.0, "recall_se": float("nan"), "videos": 10}, 1) == "1.000 over 1 queries"
    assert all(np.isnan(neighbour_recall(HalfWrong(), x, 2, 0, random.Random(0))))  # sample 0: not measured
    assert describe_recall({"recall": float("nan")}, 0) == "off"


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivf_searches_cells_as_faiss_does_without_a_copy_of_the_vectors(metric, monkeypatch):
    """Each probed cell's queries scored in one product give faiss IndexIVFFlat's own neighbours for the same
    centroids (nprobe 1 and 3, ids not equal to rows, short lists padded with -1), and the backend holds the
    caller's matrix, no copy of it. Exact search over many blocks agrees too."""
    import faiss
    from norton_retrieval import Exact, ExactConfig, FaissIVF, FaissIVFConfig

    import norton_core.neighbours as nb

    rng = np.random.default_rng(2)
    centres = rng.normal(size=(6, 24)) * 3
    x = (centres[np.arange(900) % 6] + rng.normal(size=(900, 24))).astype(np.float32)
    queries = np.asarray(sorted(rng.choice(900, 80, replace=False)))
    # shuffled ids, and increasing ones with gaps (rows in id order, as the engine's: a shorter path at nprobe 1)
    for ids in (rng.permutation(900), np.sort(rng.choice(5000, 900, replace=False))):
        for nprobe in (1, 3):
            ivf = FaissIVF(FaissIVFConfig(nlist=16, nprobe=nprobe, metric=metric), seed=0)
            ivf.build(x, ids)
            assert ivf.vectors is x
            reference = faiss.IndexIVFFlat(ivf.quantizer, 24, 16, faiss.METRIC_L2 if metric == "l2" else
                                           faiss.METRIC_INNER_PRODUCT)
            reference.add_with_ids(x, ids)
            reference.nprobe = nprobe
            for k in (40, 300):  # 300: more than some cells hold
                _, labels = reference.search(x[queries], k)
                assert (ivf.search(ids[queries], k) == labels).all()  # queries are ids; these rows' ids
            assert nprobe == 3 or (labels < 0).any()
    monkeypatch.setattr(nb, "_SCORE_ELEMENTS", 1 << 12)  # many database blocks and query chunks
    monkeypatch.setattr(nb, "_NORM_ROWS", 7)  # squared norms in many blocks, the last one short
    assert np.allclose(nb.row_norms(x), (x.astype(np.float64) ** 2).sum(1), rtol=1e-6, atol=0)
    exact = Exact(ExactConfig(metric=metric))
    exact.build(x, np.arange(900))
    assert exact.vectors is x  # the caller's matrix, not a copy
    s = -(x[queries].astype(np.float64) @ x.T.astype(np.float64))
    if metric == "l2":
        s = s * 2 + (x.astype(np.float64) ** 2).sum(1)
    found = exact.search(queries, 50)
    # the true 50 nearest in order, up to float32 rounding of near-ties (scores within 1e-6 of each other)
    assert np.allclose(np.take_along_axis(s, found, 1), np.sort(s, axis=1)[:, :50], rtol=1e-6, atol=0)
    assert (found == np.argsort(s, axis=1, kind="stable")[:, :50]).all(1).mean() > 0.95


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """H3: ENOSPC while writing a checkpoint names the error and the file; latest, and every older checkpoint, stay."""
    import errno as errno_mod

    from norton_core.errors import CheckpointError

    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 1, {"model.safetensors": b"a" * 10, "state.json": b"{}"}, keep_last=1, log=lambda m: None)
    real = ckpt.write_durable

    def full_disk(path, data):
        if path.name == "state.json":
            raise OSError(errno_mod.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(ckpt, "write_durable", full_disk)
    with pytest.raises(CheckpointError, match=r"ENOSPC .*state\.json.*\(step-1\) is intact"):
        ckpt.save_checkpoint(root, 2, {"model.safetensors": b"b" * 10, "state.json": b"{}"}, keep_last=1,
                             log=lambda m: None)
    assert (root / "latest").read_text().strip() == "step-1"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-1"]
    assert ckpt.read_checkpoint(root / "step-1")["model.safetensors"] == b"a" * 10


def test_faiss_threads_follow_run_threads_and_are_put_back():
    """A one-thread run (two side by side in a study) keeps faiss's retrieval round at one thread too, a
    deterministic one as well, and the previous setting returns afterwards."""
    import types

    import faiss
    import torch

    from norton_core.engine.setup import apply_determinism

    faiss.omp_set_num_threads(2)
    before_torch = torch.get_num_threads()
    for cfg in (types.SimpleNamespace(threads=1, deterministic=False),
                types.SimpleNamespace(threads=2, deterministic=True)):
        restore = apply_determinism(cfg)
        try:
            assert faiss.omp_get_max_threads() == 1
        finally:
            restore()
        assert faiss.omp_get_max_threads() == 2 and torch.get_num_threads() == before_torch
