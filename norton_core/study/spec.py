"""Study files: a base recipe, arms (overrides of its last stage), seeds and data variants, read strictly.

::

    name = "noise_robustness"
    base = "../recipes/how2_demo.toml"     # relative to this file; a two-stage recipe keeps its first stage
    seeds = [0, 1, 2]                      # each sets run.seed of every stage (and data.seed where the source has one)
    baseline = "norton"                    # paired differences are "arm - baseline", seed by seed
    metrics = ["youcook2_clip/R@1", "htm_align/recall", "htm_align/auc"]
    set = ["data.val_videos=16"]           # applied to every stage of every cell
    diagnostics = true                     # ground-truth diagnostics per epoch (synthetic data only)

    [variants]                             # one data variant per value of one key (the x axis of the plots)
    key = "data.shift_prob"
    values = [0.0, 0.3, 0.6, 0.9]

    # or named variants, each a set of overrides (for whole generator configurations):
    # [variants.cases]
    # many_tasks = ["data.world_seed=1", "data.tasks=24"]
    # short_steps = ["data.world_seed=2", "data.step_seconds_max=6"]

    [[arms]]
    name = "norton"
    set = []                               # --set overrides of the base recipe's last stage

    [[arms]]
    name = "nce-long"
    set = ['loss={ name = "videoclip-nce" }', "train.epochs=8"]
    baseline = "norton-long"               # this arm's paired difference is against another arm than the study's
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import attrs

from norton_core.errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
#: a variant label with one of these is no plain directory name (a separator, a control character)
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
#: characters kept as they are when a label must be rewritten (others become "_"; a hash keeps names distinct)
_DIR_CHARS = re.compile(r"[^A-Za-z0-9._=-]")
#: seeds seed numpy's and torch's generators, which take 32-bit seeds
SEED_LIMIT = 2**32
#: the first stage's run directory and record in every cell: no arm may take this name
PRETRAIN = "pretrain"
#: files the study writes beside each arm's run directory ``<arm>/``: ``<arm>.json`` (the record) and its temporary
#: ``<arm>.json.tmp``; an arm named ``x.json`` would have its run directory where arm ``x`` keeps its record
RESERVED_SUFFIXES = (".json", ".tmp")
#: recipe keys every cell gets from the study itself (its directory, its name, its seed): overriding them would
#: move a cell's run or silently lose the study's value
STUDY_KEYS = ("run.seed", "run.name", "run.output_dir")
#: keys an arm may not set either: arms share their cell's first stage (its data, its seed, the weights it made)
ARM_KEYS = (*STUDY_KEYS, "run.pretrain_recipe", "data.seed")
TOP_KEYS = ("name", "base", "output_dir", "seeds", "baseline", "metrics", "set", "diagnostics", "variants", "arms")


@attrs.frozen
class Arm:
    name: str
    set: tuple[str, ...]
    #: the arm this one's paired differences are against ('' = the study's baseline)
    baseline: str = ""


@attrs.frozen
class Study:
    source: Path
    name: str
    base: Path
    output_dir: Path
    seeds: tuple[int, ...]
    baseline: str
    metrics: tuple[str, ...]
    set: tuple[str, ...]
    diagnostics: bool
    variant_key: str
    variant_values: tuple[Any, ...]
    arms: tuple[Arm, ...]
    #: named variants (``[variants.cases]``): name -> overrides; then variant_values are the names
    variant_cases: dict[str, tuple[str, ...]] = attrs.field(factory=dict)

    def variant_label(self, value: Any) -> str:
        if self.variant_cases:
            return str(value)
        if not self.variant_key:
            return "base"
        return f"{self.variant_key.rsplit('.', 1)[-1]}={json.dumps(value)}"

    def variant_dir(self, value: Any) -> str:
        """The variant's directory name under ``cells/``: its label when that is a plain file name, else the label
        with every other character replaced and a hash of the label appended (a value such as ``"../.."`` or a
        store path never names a directory outside the study)."""
        label = self.variant_label(value)
        if not _UNSAFE.search(label) and not label.startswith(".") and len(label) <= 100:
            return label
        digest = hashlib.sha256(label.encode()).hexdigest()[:8]
        return f"{_DIR_CHARS.sub('_', label)[:80].lstrip('.') or '_'}-{digest}"

    def variant_set(self, value: Any) -> tuple[str, ...]:
        if self.variant_cases:
            return self.variant_cases[value]
        return (f"{self.variant_key}={json.dumps(value)}",) if self.variant_key else ()

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def baseline_of(self, name: str) -> str:
        """The arm ``name``'s paired differences are taken against (itself for the study's baseline)."""
        return self.arm(name).baseline or self.baseline


def _strings(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where}: expected a list of strings, got {value!r}")
        return ()
    for text in value:
        if "=" not in text:
            problems.append(f"{where}: {text!r} is not table.key=value")
    return tuple(value)


def load_study(path: str | Path, *, seeds: tuple[int, ...] | None = None, values: tuple[Any, ...] | None = None,
               extra_set: tuple[str, ...] = (), output_dir: str | None = None) -> Study:
    """Read and check a study file; every problem is reported at once as ``<file>: <key>: <problem>``.

    ``seeds``, ``values``, ``extra_set`` and ``output_dir`` override the file's (``norton study --seeds/--values/
    --set/--output``)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such study file") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
    problems: list[str] = []
    for key in raw:
        if key not in TOP_KEYS:
            problems.append(f"{key}: unknown key; allowed keys: {', '.join(TOP_KEYS)}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.append(f"name: expected a plain name (letters, digits, . _ -), got {name!r}")
        name = path.stem
    base = raw.get("base")
    base_path = path.parent
    if not isinstance(base, str):
        problems.append("base: required: the recipe the arms modify (a path relative to the study file)")
    else:
        base_path = (path.parent / base).resolve()
        if not base_path.is_file():
            problems.append(f"base: {base!r}: no such recipe ({base_path})")
    raw_seeds = list(seeds) if seeds is not None else raw.get("seeds", [0])
    if not (isinstance(raw_seeds, list) and raw_seeds and all(type(s) is int for s in raw_seeds)):
        problems.append(f"seeds: expected a non-empty list of integers, got {raw_seeds!r}")
        raw_seeds = [0]
    if len(set(raw_seeds)) != len(raw_seeds):
        problems.append(f"seeds: repeated seeds in {raw_seeds}")
    for seed in raw_seeds:
        if not 0 <= seed < SEED_LIMIT:
            problems.append(f"seeds: {seed} is out of range: a seed is 0 to {SEED_LIMIT - 1} (2^32 - 1)")
    metrics = raw.get("metrics", ["youcook2_clip/R@1", "htm_align/recall", "htm_align/auc"])
    if not (isinstance(metrics, list) and metrics and all(isinstance(m, str) and "/" in m for m in metrics)):
        problems.append(f"metrics: expected a list of 'task/metric' names, got {metrics!r}")
        metrics = []
    common = _strings(raw.get("set", []), "set", problems) + tuple(extra_set)
    diagnostics = raw.get("diagnostics", False)
    if type(diagnostics) is not bool:
        problems.append(f"diagnostics: expected true or false, got {diagnostics!r}")
    variants = raw.get("variants", {})
    given = values
    chosen: Any = [None]  # no variants: one cell per seed and arm, nothing overridden
    key = ""
    cases: dict[str, tuple[str, ...]] = {}
    if not isinstance(variants, dict):
        problems.append("variants: expected a table with key and values")
    elif "cases" in variants:
        for k in variants:
            if k != "cases":
                problems.append(f"variants.{k}: not allowed beside variants.cases (named variants have no key)")
        cases = _cases(variants["cases"], problems)
        chosen = list(cases)
        if given is not None:
            unknown = [v for v in given if v not in cases]
            if unknown:
                problems.append(f"--values {unknown}: not among the study's cases ({', '.join(cases)})")
            chosen = [v for v in given if v in cases]
    elif variants:
        for k in variants:
            if k not in ("key", "values"):
                problems.append(f"variants.{k}: unknown key; allowed keys: key, values (or cases alone)")
        key = variants.get("key")
        chosen = list(given) if given is not None else variants.get("values")
        if not isinstance(key, str) or "." not in key:
            problems.append(f"variants.key: expected a dotted recipe key such as 'data.shift_prob', got {key!r}")
            key = "data.?"
        if not (isinstance(chosen, list) and chosen and all(isinstance(v, (int, float, str, bool)) for v in chosen)):
            problems.append(f"variants.values: expected a non-empty list of numbers or strings, got {chosen!r}")
            chosen = [None]
    arms_raw = raw.get("arms", [])
    arms: list[Arm] = []
    if not (isinstance(arms_raw, list) and arms_raw):
        problems.append("arms: expected at least one [[arms]] table with a name")
        arms_raw = []
    for i, arm in enumerate(arms_raw):
        if not isinstance(arm, dict):
            problems.append(f"arms[{i}]: expected a table")
            continue
        for k in arm:
            if k not in ("name", "set", "baseline"):
                problems.append(f"arms[{i}].{k}: unknown key; allowed keys: name, set, baseline")
        arm_name = arm.get("name")
        if not isinstance(arm_name, str) or not _NAME.fullmatch(arm_name):
            problems.append(f"arms[{i}].name: expected a plain name, got {arm_name!r}")
            continue
        problems.extend(f"arms[{i}].name: {p}" for p in _arm_name_problems(arm_name, [a.name for a in arms]))
        arm_set = _strings(arm.get("set", []), f"arms[{i}].set", problems)
        problems.extend(_controlled(arm_set, ARM_KEYS, f"arms[{i}].set"))
        own = arm.get("baseline", "")
        if not isinstance(own, str) or own == arm_name:
            problems.append(f"arms[{i}].baseline: expected the name of another arm, got {own!r}")
            own = ""
        arms.append(Arm(arm_name, arm_set, own))
    baseline = raw.get("baseline", arms[0].name if arms else "")
    if arms and baseline not in {a.name for a in arms}:
        problems.append(f"baseline: {baseline!r} is not an arm ({', '.join(a.name for a in arms)})")
    names = [a.name for a in arms]
    problems.extend(f"arms[{i}].baseline: {a.baseline!r} is not an arm ({', '.join(names)})"
                    for i, a in enumerate(arms) if a.baseline and a.baseline not in names)
    out = output_dir if output_dir is not None else raw.get("output_dir", f"runs/studies/{name}")
    if not isinstance(out, str) or not out:
        problems.append(f"output_dir: expected a directory path, got {out!r}")
        out = f"runs/studies/{name}"
    problems.extend(_controlled(common, STUDY_KEYS, "set"))
    for case, sets in cases.items():
        problems.extend(_controlled(sets, STUDY_KEYS, f"variants.cases.{case}"))
    if key in STUDY_KEYS:
        problems.append(f"variants.key: {key} is set by the study in every cell; it cannot be a variant")
    if key and isinstance(chosen, list) and len({json.dumps(v) for v in chosen}) != len(chosen):
        problems.append(f"variants.values: repeated values in {chosen}")
    if problems:
        raise RecipeError(problems=[f"{path}: {p}" for p in problems])
    study = Study(source=path, name=name, base=base_path, output_dir=Path(out), seeds=tuple(raw_seeds),
                  baseline=str(baseline), metrics=tuple(metrics), set=common, diagnostics=bool(diagnostics),
                  variant_key=key, variant_values=tuple(chosen), arms=tuple(arms), variant_cases=cases)
    _check_directories(study, path)
    return study


def _arm_name_problems(name: str, earlier: list[str]) -> list[str]:
    """An arm's name becomes its run directory beside the first stage's and the records: refuse names that would
    share a path with them (case-insensitively: macOS and Windows file systems fold case)."""
    folded = name.casefold()
    if folded == PRETRAIN:
        return [f"{name!r} is reserved: it is the first stage's run directory in every cell"]
    if folded.endswith(RESERVED_SUFFIXES):
        return [f"{name!r} ends in one of {', '.join(RESERVED_SUFFIXES)}: the study keeps its records under such "
                "names beside the run directories"]
    twin = next((e for e in earlier if e.casefold() == folded), None)
    if twin is not None:
        return [f"{name!r} appears twice" if twin == name else
                f"{name!r} and {twin!r} differ only in case (one directory on a case-insensitive file system)"]
    return []


def set_keys(text: str) -> set[str]:
    """The dotted recipe keys an override ``table.key=value`` sets (every key inside a table value too)."""
    from norton_core.recipe.files import parse_override

    try:
        keys, value = parse_override(text)
    except RecipeError:
        return set()  # loading the cell's recipe reports it, with the cells it concerns
    out: set[str] = set()

    def walk(prefix: str, v: Any) -> None:
        out.add(prefix)
        if isinstance(v, dict):
            for k, inner in v.items():
                walk(f"{prefix}.{k}", inner)

    walk(".".join(keys), value)
    return out


_WHY = {"run.seed": "each cell's seed comes from the study's seeds",
        "run.name": "the study names each cell's run directory",
        "run.output_dir": "the study places each cell's run directory",
        "run.pretrain_recipe": "the arms share the base recipe's first stage",
        "data.seed": "the arms share their cell's data (fix data.seed in the study's set instead)"}


def _controlled(sets: tuple[str, ...], keys: tuple[str, ...], where: str) -> list[str]:
    found = sorted({k for text in sets for k in set_keys(text) if k in keys})
    return [f"{where}: {k} cannot be set here: {_WHY[k]}" for k in found]


def _check_directories(study: Study, path: Path) -> None:
    """Every cell's directory lies inside ``cells/``, and no two variants share one (case-insensitively)."""
    seen: dict[str, str] = {}
    problems = []
    for value in study.variant_values:
        name, label = study.variant_dir(value), study.variant_label(value)
        if "/" in name or "\\" in name or name.startswith("."):  # variant_dir never makes these: a guard
            problems.append(f"variants: {label!r} gives no plain directory name")
        twin = seen.setdefault(name.casefold(), label)
        if twin != label:
            problems.append(f"variants: {label!r} and {twin!r} would share the directory cells/{name}")
    if problems:
        raise RecipeError(problems=[f"{path}: {p}" for p in problems])


def _cases(raw: Any, problems: list[str]) -> dict[str, tuple[str, ...]]:
    """``[variants.cases]``: each name (a plain name: it becomes a directory) maps to a list of overrides."""
    if not isinstance(raw, dict) or not raw:
        problems.append("variants.cases: expected a table of name = [\"table.key=value\", ...]")
        return {}
    cases = {}
    for name, sets in raw.items():
        if not _NAME.fullmatch(name):
            problems.append(f"variants.cases.{name}: expected a plain name (letters, digits, . _ -)")
            continue
        cases[name] = _strings(sets, f"variants.cases.{name}", problems)
    return cases
