"""Probes: hostile and oversized inputs and damaged run state, each in a subprocess under a timeout and an
address-space cap (preemption has its own probe, ``benchmarks/preempt_probe.py``).

Run: ``python benchmarks/input_probes.py [--trials 3] [--timeout 120] [--mem-gb 8] [--only NAME,...] [--json]``

Every case builds its input in a fresh directory and runs the command a user would (``norton run --dry-run``,
``norton evaluate``, ``norton prepare``) or, for files only a library call reads (a checkpoint's ``rng.json``, a
clip list), that call behind the CLI's error handling. The child runs under ``resource.setrlimit(RLIMIT_AS)``, so a
reader that tries to swallow ``/dev/zero`` or a sparse 20 GB file dies alone instead of taking the machine down.

Each trial is classified as

- ``survived``: a valid input (the controls, and damaged state that must be stepped around: a checkpoint whose
  metadata lies, a stale copy named higher, one unreadable run among others) did its work (exit 0, and printed
  what shows it chose right);
- ``clean error``: exit 2 with ``norton: error:`` lines naming the expected limit or problem, and no traceback;
- ``traceback``: a Python traceback (a MemoryError under the cap counts as ``lost``);
- ``silent wrong``: exit 0 where the input should have been refused (or a store that does not verify);
- ``hang``: the timeout expired;
- ``lost``: killed by a signal or out of memory under the cap.

The table is followed by the first error line of each case: which limit was hit, as the user reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "smoke_cpu.toml"
ENV = {**os.environ, "NORTON_LOAD_PLUGINS": "norton", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(ROOT)}
OUTCOMES = ("survived", "clean error", "traceback", "silent wrong", "hang", "lost")
#: a library call run like the CLI runs a command: a NortonError is its lines on stderr and exit 2
LIBRARY_CALL = """
import sys
from norton_core.errors import NortonError
try:
{body}
except NortonError as exc:
    for line in exc.lines():
        print(f"norton: error: {{line}}", file=sys.stderr)
    sys.exit(2)
"""


@attrs.frozen
class Shared:
    """Inputs built once and copied per trial: an export of the smoke model and a small generated dataset."""

    export: Path
    raw: Path
    run: Path


@attrs.frozen
class Case:
    name: str
    item: str
    #: builds the trial's input under ``work`` and returns the argv to run (relative to the repository)
    setup: Callable[[Path, Shared], list[str]]
    #: text every clean error must contain (the limit or the problem); None: the input is valid (a control)
    expect: str | None
    #: for cases whose outcome is more than one process's exit (two prepares): classifies the trial itself
    custom: Callable[[Path, Shared, float, int], tuple[str, str]] | None = None
    #: for a valid input: text its standard output must hold (the right checkpoint chosen, every run listed)
    shows: str | None = None


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "norton_core.cli", *args]


def library(body: str) -> list[str]:
    return [sys.executable, "-c", LIBRARY_CALL.format(body=textwrap.indent(textwrap.dedent(body).strip(), "    "))]


def recipe_with(work: Path, text: str, name: str = "r.toml") -> Path:
    path = work / name
    path.write_text(f'extends = "{SMOKE}"\n{text}')
    return path


def copy_export(work: Path, shared: Shared) -> Path:
    dst = work / "export"
    shutil.copytree(shared.export, dst)
    return dst


def rehash(export: Path) -> None:
    from norton_core.runs.export import write_manifest

    write_manifest(export)


def sparse(path: Path, size: int = 20 * 1024**3) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


# ----------------------------------------------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------------------------------------------


def _export_tokenizer_deleted(work: Path, shared: Shared) -> list[str]:
    export = copy_export(work, shared)
    (export / "text_encoder" / "tokenizer.json").unlink()
    return cli("evaluate", str(export), "--eval-root", str(shared.raw / "eval"))


def _export_flipped_byte(work: Path, shared: Shared) -> list[str]:
    export = copy_export(work, shared)
    data = bytearray((export / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x10
    (export / "model.safetensors").write_bytes(bytes(data))
    return cli("evaluate", str(export), "--eval-root", str(shared.raw / "eval"))


def _export_nan_layernorm(work: Path, shared: Shared) -> list[str]:
    from safetensors.torch import load, save

    export = copy_export(work, shared)
    tensors = load((export / "model.safetensors").read_bytes())
    key = next(k for k in tensors if "LayerNorm.weight" in k and k.startswith("video_encoder."))
    tensors[key][0] = float("nan")
    (export / "model.safetensors").write_bytes(save(tensors))
    rehash(export)  # the manifest vouches for the file: only the evaluation's finite check can catch it
    return cli("evaluate", str(export), "--eval-root", str(shared.raw / "eval"), "--tasks", "youcook2-clip")


def _export_video_layers(work: Path, shared: Shared) -> list[str]:
    export = copy_export(work, shared)
    meta = json.loads((export / "model.json").read_text())
    meta["model"]["video_layers"] = 100_000
    (export / "model.json").write_text(json.dumps(meta))
    rehash(export)
    return cli("evaluate", str(export), "--eval-root", str(shared.raw / "eval"))


def _export_model_json_fifo(work: Path, shared: Shared) -> list[str]:
    export = copy_export(work, shared)
    (export / "model.json").unlink()
    os.mkfifo(export / "model.json")
    return cli("evaluate", str(export), "--eval-root", str(shared.raw / "eval"))


def _export_intact(work: Path, shared: Shared) -> list[str]:
    export = copy_export(work, shared)
    return cli("evaluate", str(export), "--eval-root", str(shared.raw / "eval"), "--tasks", "youcook2-clip")


def _clip_list_repeated(work: Path, shared: Shared) -> list[str]:
    import pickle

    path = work / "youcook_val.pkl"
    path.write_bytes(pickle.dumps([{"id": "yc000_0"}] * 600_000, protocol=4))  # 1.2 MB
    return library(f"from norton_evaluators.readers import read_clip_selection\n"
                   f"read_clip_selection(__import__('pathlib').Path({str(path)!r}))")


def _clip_list_nested(work: Path, shared: Shared) -> list[str]:
    levels = 10_000_000  # 20 MB of nested empty lists
    path = work / "youcook_val.pkl"
    path.write_bytes(b"\x80\x04" + b"]" * levels + b"a" * (levels - 1) + b".")
    return library(f"from norton_evaluators.readers import read_clip_selection\n"
                   f"read_clip_selection(__import__('pathlib').Path({str(path)!r}))")


def _checkpoint_file(kind: str) -> Callable[[Path, Shared], list[str]]:
    def setup(work: Path, shared: Shared) -> list[str]:
        from norton_core.engine import checkpoint as ckpt

        files = {"model.safetensors": b"x" * 64, "state.json": b'{"step": 4}', "rng.json": b'[{"seed": 1}]'}
        path = ckpt.save_checkpoint(work / "checkpoints", 4, files, keep_last=2, log=lambda *_: None)
        rng = path / "rng.json"
        rng.unlink()
        if kind == "fifo":
            os.mkfifo(rng)
        elif kind == "dev_zero":
            rng.symlink_to("/dev/zero")
        else:
            sparse(rng)
        return library(f"from norton_core.engine.checkpoint import read_checkpoint\n"
                       f"read_checkpoint(__import__('pathlib').Path({str(path)!r}))")
    return setup


def _recipe_file(kind: str) -> Callable[[Path, Shared], list[str]]:
    def setup(work: Path, shared: Shared) -> list[str]:
        target = work / "target.toml"
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "dev_zero":
            target.symlink_to("/dev/zero")
        elif kind == "sparse":
            sparse(target)
        else:  # an extends target that is each of them in turn is the same reader; here: /dev/zero
            (work / "zero.toml").symlink_to("/dev/zero")
            target.write_text('extends = "zero.toml"\n')
        return cli("run", str(target), "--dry-run")
    return setup


def _dry_run_with(*sets: str, text: str = "") -> Callable[[Path, Shared], list[str]]:
    def setup(work: Path, shared: Shared) -> list[str]:
        args = [a for s in sets for a in ("--set", s.replace("WORK", str(work)))]
        return cli("run", str(recipe_with(work, text)), "--dry-run", *args)
    return setup


def _output_dir_is_a_file(work: Path, shared: Shared) -> list[str]:
    (work / "afile").write_text("x")
    return cli("run", str(recipe_with(work, "")), "--dry-run", "--set", f'run.output_dir="{work / "afile"}"')


def _extends_symlink_cycle(work: Path, shared: Shared) -> list[str]:
    (work / "d").symlink_to(work)
    (work / "a.toml").write_text('extends = "d/d/b.toml"\n')
    (work / "b.toml").write_text('extends = "d/a.toml"\n')
    return cli("run", str(work / "a.toml"), "--dry-run")


def _non_utf8(work: Path, shared: Shared) -> list[str]:
    path = work / "r.toml"
    path.write_bytes(f'extends = "{SMOKE}"\n# caf\xe9\n'.encode("latin-1"))
    return cli("run", str(path), "--dry-run")


def _unknown_keys(work: Path, shared: Shared) -> list[str]:
    stray = "".join(f"stray_{i} = {i}\n" for i in range(10_000))
    return cli("run", str(recipe_with(work, f"[train]\n{stray}")), "--dry-run")


def _two_prepares(work: Path, shared: Shared, timeout: float, mem: int) -> tuple[str, str]:
    """Two `norton prepare how2` with different options into one --out, started together; then `norton verify`."""
    out = work / "out"
    procs = [_spawn(cli("prepare", "how2", str(shared.raw), "--out", str(out), "--no-progress", "--workers", "1",
                        "--shard-size", size), mem) for size in ("4", "5")]
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return "hang", "a prepare did not finish"
        results.append((p.returncode, err))
    for code, err in results:
        if code < 0 or "MemoryError" in err:
            return "lost", err.strip()[-200:]
        if "Traceback" in err:
            return "traceback", err.strip().splitlines()[-1]
    codes = sorted(code for code, _ in results)
    verified = [subprocess.run(cli("verify", str(out / split), "--no-progress"), env=ENV, capture_output=True,
                               text=True, timeout=timeout).returncode for split in ("train", "val")]
    refused = [err for code, err in results if code == 2]
    if codes != [0, 2] or any(verified):
        return "silent wrong", f"exit codes {codes}, verify {verified}"
    return "clean error", _first_error(refused[0])


def _study_after_base_edit(work: Path, shared: Shared, timeout: float, mem: int) -> tuple[str, str]:
    """A one-seed, one-arm study trained to the end; its base recipe's train.max_steps edited; then
    `--report-only`, which must refuse the finished cell (it was made with other settings), naming the key."""
    base = work / "base.toml"
    base.write_text(f'extends = "{SMOKE}"\n[train]\nmax_steps = 1\n')
    study = work / "s.toml"
    study.write_text(f'name = "s"\nbase = "base.toml"\nseeds = [0]\noutput_dir = "{work / "out"}"\n'
                     '[[arms]]\nname = "norton"\n')
    runs = []
    for argv in (cli("study", str(study)), None, cli("study", str(study), "--report-only")):
        if argv is None:
            base.write_text(f'extends = "{SMOKE}"\n[train]\nmax_steps = 2\n')
            continue
        proc = _spawn(argv, mem)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            return "hang", "a study did not finish"
        runs.append((proc.returncode, err))
    (first, first_err), (code, err) = runs
    if first != 0:
        return classify(first, first_err, None)
    return classify(code, err, "train.max_steps")


def _checkpoints(work: Path, steps: list[int], state: dict[int, dict[str, object]] | None = None) -> Path:
    from norton_core.engine import checkpoint as ckpt

    root = work / "checkpoints"
    for step in steps:
        meta = (state or {}).get(step, {"step": step, "epoch": 1})
        files = {"model.safetensors": b"x" * 64, "state.json": json.dumps(meta).encode()}
        ckpt.save_checkpoint(root, step, files, keep_last=len(steps) + 1, log=lambda *_: None)
    return root


def _resume_choice(root: Path) -> list[str]:
    return library(f"from norton_core.engine.checkpoint import find_latest\n"
                   f"found = find_latest(__import__('pathlib').Path({str(root)!r}), set_aside=True)\n"
                   f"print('resumes from', found[0].name if found else None)")


def _state_step_out_of_range(work: Path, shared: Shared) -> list[str]:
    # a state.json claiming step 10**30 inside a checkpoint whose manifest hashes it (a re-hashed edit)
    return _resume_choice(_checkpoints(work, [2, 4, 6], {6: {"step": 10**30, "epoch": 10**9}}))


def _stale_copy_named_higher(work: Path, shared: Shared) -> list[str]:
    root = _checkpoints(work, [2, 4, 6, 8, 10])
    shutil.copytree(root / "step-6", root / "step-100")  # cp -r step-6 step-100
    return _resume_choice(root)


def _one_unreadable_run(work: Path, shared: Shared) -> list[str]:
    for name in ("good", "broken"):
        shutil.copytree(shared.run, work / "runs" / name)
    (work / "runs" / "broken" / "eval.json").write_bytes(b"\xff{not json")
    return cli("runs", str(work / "runs"))


def _study_arm_named_pretrain(work: Path, shared: Shared) -> list[str]:
    study = work / "s.toml"
    study.write_text(f'name = "s"\nbase = "{SMOKE}"\nseeds = [0]\n[[arms]]\nname = "pretrain"\n')
    return cli("study", str(study))


CASES = [
    Case("export: tokenizer.json deleted", "3", _export_tokenizer_deleted, "tokenizer.json: missing from the export"),
    Case("export: a weight byte flipped", "3", _export_flipped_byte, "sha256 differs from the export's manifest"),
    Case("export: NaN LayerNorm weight (re-hashed)", "3", _export_nan_layernorm, "embeddings hold NaN or inf"),
    Case("export: intact (control)", "3", _export_intact, None),
    Case("export: video_layers = 100000", "9", _export_video_layers, "video_layers: must be <= 48"),
    Case("export: model.json is a FIFO", "9", _export_model_json_fifo, "not a regular file"),
    Case("clip list: one clip x 600,000 (1.2 MB)", "9", _clip_list_repeated, "a clip list may hold"),
    Case("clip list: 20 MB of nested empty lists", "9", _clip_list_nested, "the pickle builds more than"),
    Case("data.videos = 1e9 (--dry-run)", "9", _dry_run_with("data.videos=1000000000"),
         "data.videos: must be <= 100000"),
    Case("checkpoint rng.json: FIFO", "9", _checkpoint_file("fifo"), "is a FIFO"),
    Case("checkpoint rng.json: -> /dev/zero", "9", _checkpoint_file("dev_zero"), "is a character device"),
    Case("checkpoint rng.json: sparse 20 GB", "9", _checkpoint_file("sparse"), "bytes limit for a checkpoint file"),
    Case("recipe: FIFO", "9", _recipe_file("fifo"), "is a FIFO"),
    Case("recipe: -> /dev/zero", "9", _recipe_file("dev_zero"), "is a character device"),
    Case("recipe: sparse 20 GB", "9", _recipe_file("sparse"), "more than the 1 MiB limit for a recipe"),
    Case("recipe: extends -> /dev/zero", "9", _recipe_file("extends"), "extends:"),
    Case("run.seed = 2**32", "10", _dry_run_with(f"run.seed={2**32}"), "run.seed: must be <= 4294967295"),
    Case("run.name of 300 characters", "10", _dry_run_with(f'run.name="{"n" * 300}"'), "more than the 200 allowed"),
    Case("run.output_dir is a file", "10", _output_dir_is_a_file, "exists and is not a directory"),
    Case("extends cycle through symlinks", "10", _extends_symlink_cycle, "extends: cycle"),
    Case("non-UTF-8 recipe bytes", "10", _non_utf8, "not UTF-8 text"),
    Case("10,000 unknown keys", "10", _unknown_keys, "more unknown keys in this table"),
    Case("recipe: valid (control)", "10", _dry_run_with(), None),
    Case("two prepares into one --out", "7", lambda w, s: [], None, custom=_two_prepares),
    Case("checkpoint state.json: step 1e30, re-hashed", "4", _state_step_out_of_range, None,
         shows="resumes from step-4"),
    Case("checkpoint: cp -r step-6 step-100", "5", _stale_copy_named_higher, None,
         shows="resumes from step-10"),
    Case("study: an arm named pretrain", "6", _study_arm_named_pretrain, "'pretrain' is reserved"),
    Case("study: base recipe edited, then --report-only", "2", lambda w, s: [], None, custom=_study_after_base_edit),
    Case("norton runs: one run's eval.json unreadable", "8", _one_unreadable_run, None, shows="unreadable"),
]


# ----------------------------------------------------------------------------------------------------------------
# running and classifying
# ----------------------------------------------------------------------------------------------------------------


#: runs the probed command as its only child and reports the child's peak resident memory as its last stderr line
PEAK_WRAPPER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
                "print(f'probe-peak-rss-kb {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', "
                "file=sys.stderr); sys.exit(128 - code if code < 0 else code)")


def _spawn(argv: list[str], mem: int) -> subprocess.Popen:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))

    return subprocess.Popen([sys.executable, "-c", PEAK_WRAPPER, *argv], cwd=ROOT, env=ENV, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=cap, start_new_session=True)


def _peak_mb(err: str) -> float:
    """The peak resident memory the wrapper reported (0 when the trial was killed before it could say)."""
    for line in reversed(err.splitlines()):
        if line.startswith("probe-peak-rss-kb "):
            return int(line.split()[1]) / 1024
    return 0.0


def _first_error(err: str) -> str:
    return next((line for line in err.splitlines() if line.startswith("norton: error:")), err.strip()[-200:])


def classify(code: int | None, err: str, expect: str | None, out: str = "", shows: str | None = None) -> tuple[str, str]:
    if code is None:
        return "hang", "timed out"
    if code < 0 or "MemoryError" in err or "Cannot allocate memory" in err:
        return "lost", f"exit {code}: {err.strip()[-160:]}"
    if "Traceback" in err:
        return "traceback", err.strip().splitlines()[-1]
    if expect is None:
        if code != 0:
            return "silent wrong", f"exit {code}: {_first_error(err)}"
        if shows is None:
            return "survived", "exit 0"
        shown = [line for line in out.splitlines() if re.search(rf"{re.escape(shows)}\b", line)]
        if not shown:  # a whole-word match: "step-10" is not "step-100"
            return "silent wrong", f"exit 0 but the output lacks {shows!r}: {out.strip()[-160:]}"
        return "survived", f"exit 0: {shown[0].strip()}"
    if code == 0:
        return "silent wrong", "exit 0: the input was accepted"
    first = _first_error(err)
    errors = [line for line in err.splitlines() if line.startswith("norton: error:")]
    if code == 2 and any(expect in line for line in errors):
        return "clean error", next(line for line in errors if expect in line)
    return "silent wrong", f"exit {code}, not the expected error ({expect!r}): {first}"


def run_trial(case: Case, shared: Shared, timeout: float, mem: int) -> tuple[str, str, float, float]:
    """(outcome, what it said, seconds, peak resident MB of the probed process)."""
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        work = Path(tmp)
        if case.custom is not None:
            outcome, note = case.custom(work, shared, timeout, mem)
            return outcome, note, time.perf_counter() - began, 0.0
        proc = _spawn(case.setup(work, shared), mem)
        try:
            out, err = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            code = None
    if code is not None and code > 128:  # the wrapper's child died by signal (128 + signal number)
        code = 128 - code
    outcome, note = classify(code, err, case.expect, out, case.shows)
    return outcome, note, time.perf_counter() - began, _peak_mb(err)


def build_shared(root: Path) -> Shared:
    """The smoke model's initial weights exported from a one-checkpoint run, and a 24-video generated dataset."""
    from norton_core.data.synthetic import generate
    from norton_core.engine import checkpoint as ckpt
    from norton_core.engine.state_files import tensors_to_bytes
    from norton_core.recipe.load import load_recipe
    from norton_core.runs.export import export_run

    raw = generate(root / "raw", 24, seed=7, val_videos=6, youcook2_videos=3, htm_align_videos=2, msrvtt_clips=4)
    recipe = load_recipe(SMOKE, ['run.name="probe"'])
    run = root / "runs" / "probe"
    run.mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps(recipe.resolved()))
    files = {"model.safetensors": tensors_to_bytes(recipe.build("model").state_dict()),
             "state.json": json.dumps({"step": 2}).encode()}
    ckpt.save_checkpoint(run / "checkpoints", 2, files, keep_last=2, log=lambda *_: None)
    export_run(run, root / "export", log=lambda *_: None)
    return Shared(export=root / "export", raw=raw.root, run=run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="trials per case (default 3)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per trial before it counts as a hang")
    parser.add_argument("--mem-gb", type=float, default=8.0, help="address-space cap of each child (default 8 GB)")
    parser.add_argument("--only", help="comma-separated substrings of case names to run")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON after the table")
    args = parser.parse_args()
    os.environ.update(ENV)
    mem = int(args.mem_gb * 1024**3)
    cases = [c for c in CASES if not args.only or any(s.strip() in c.name for s in args.only.split(","))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="probes-shared-") as tmp:
        print(f"building the shared export and dataset in {tmp} ...", file=sys.stderr)
        shared = build_shared(Path(tmp))
        for case in cases:
            counts = dict.fromkeys(OUTCOMES, 0)
            notes, seconds, peaks = [], [], []
            for _ in range(args.trials):
                outcome, note, took, peak = run_trial(case, shared, args.timeout, mem)
                counts[outcome] += 1
                notes.append(note)
                seconds.append(took)
                peaks.append(peak)
            rows.append({"case": case.name, "item": case.item, "trials": args.trials, **counts,
                         "seconds": round(max(seconds), 1), "peak_mb": round(max(peaks)), "message": notes[0]})
            print(f"  {case.name}: {counts} ({max(seconds):.1f} s)", file=sys.stderr)
    width = max(len(r["case"]) for r in rows)
    header = f"{'case':<{width}}  item  trials  " + "  ".join(OUTCOMES) + "  max s  peak MB"
    print(header)
    for r in rows:
        cells = "  ".join(f"{r[o]:>{len(o)}}" for o in OUTCOMES)
        peak = f"{r['peak_mb']:>7}" if r["peak_mb"] else f"{'-':>7}"
        print(f"{r['case']:<{width}}  {r['item']:>4}  {r['trials']:>6}  {cells}  {r['seconds']:>5}  {peak}")
    print("\nwhat each case's first trial said:")
    for r in rows:
        print(f"- {r['case']}: {r['message']}")
    if args.json:
        print(json.dumps(rows, indent=1))
    bad = sum(r["traceback"] + r["silent wrong"] + r["hang"] + r["lost"] for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
