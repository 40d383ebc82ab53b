"""Does the demo recipe learn beyond the one generated world it was written on?

    python benchmarks/generalization_bench.py [--configs 1,2,3,4,5] [--seed 0] [--out DIR] [--set KEY=VALUE]

Trains the demo's two stages (recipes/videoclip_demo.toml, then recipes/how2_demo.toml from its final weights) on
each of five generator configurations that were never used to choose the recipe's defaults, changing only
``[data]``, and prints per configuration the YouCook2-format clip R@1 against its chance (100 / pairs), the
HTM-Align-format recall against its chance and the HTM-Align AUC. Targets: clip R@1 >= 10x chance, recall >= 2x
chance, AUC >= 60. About 2 minutes per configuration on 2 idle CPU cores (much more on a shared machine).
``--set`` adds an override to both stages (e.g. ``train.max_steps=2`` to check the script itself in seconds; the
targets only mean something at the demo's scale).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

#: held-out worlds (none of them is the default world or a configuration the defaults were chosen on)
CONFIGS: dict[int, dict[str, object]] = {
    1: {"world_seed": 101, "tasks": 30, "actions": 24, "objects": 40, "caption_templates": "alternate",
        "chatter_pool": 60},
    2: {"world_seed": 102, "step_seconds_min": 2, "step_seconds_max": 8, "task_steps_min": 8, "task_steps_max": 14,
        "feature_noise": 1.0},
    3: {"world_seed": 103, "feature_drift": 1.0, "chatter_mentions_prob": 0.5, "nonvisual_prob": 0.3},
    4: {"world_seed": 104, "shift_prob": 0.5, "shift_seconds": 10.0, "uncaptioned_prob": 0.3, "skip_step_prob": 0.3},
    5: {"world_seed": 105, "tasks": 6, "actions": 8, "objects": 12, "task_objects": 3, "chatter_pool": 4,
        "caption_templates": "both"},
}
TARGETS = {"clip": 10.0, "recall": 2.0, "auc": 60.0}


def _train(recipe: Path, overrides: list[str]):  # type: ignore[no-untyped-def]
    from norton_core.engine import train
    from norton_core.recipe.load import load_recipe

    return train(load_recipe(recipe, overrides), overwrite=True)


def run_config(number: int, seed: int, out: Path, extra: list[str]) -> dict[str, float]:
    data = [f"data.{k}={json.dumps(v)}" for k, v in CONFIGS[number].items()]
    common = [*data, *extra, f"data.seed={seed}", f"run.seed={seed}", f"run.output_dir={json.dumps(str(out / str(number)))}"]
    first = _train(RECIPES / "videoclip_demo.toml", [*common, 'run.name="first"'])
    second = _train(RECIPES / "how2_demo.toml", [*common, 'run.name="second"', 'run.pretrain_recipe=""',
                                                 f"run.init_from={json.dumps(str(first.run_dir))}"])
    after = second.evaluation["after"]
    return {"clip": after["youcook2_clip/R@1"] / (100.0 / after["youcook2_clip/pairs"]),
            "recall": after["htm_align/recall"] / after["htm_align/recall_chance"],
            "auc": after["htm_align/auc"], "clip_r1": after["youcook2_clip/R@1"],
            "first_clip": first.evaluation["after"]["youcook2_clip/R@1"] / (100.0 / after["youcook2_clip/pairs"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="1,2,3,4,5", help="comma-separated configuration numbers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="run directory (default: a temporary one)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for both stages (not [data]: that is the configuration's)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="norton-generalization-"))
    rows = []
    for number in (int(c) for c in args.configs.split(",")):
        began = time.perf_counter()
        res = run_config(number, args.seed, out, args.overrides)
        rows.append((number, res, time.perf_counter() - began))
        print(f"config {number}: {json.dumps(CONFIGS[number])}", flush=True)
    print("\nconfig  clip R@1 / chance  HTM recall / chance  HTM AUC  (first stage clip/chance)  minutes  targets met")
    for number, res, seconds in rows:
        met = res["clip"] >= TARGETS["clip"] and res["recall"] >= TARGETS["recall"] and res["auc"] >= TARGETS["auc"]
        print(f"{number:>6}  {res['clip']:>17.1f}  {res['recall']:>19.2f}  {res['auc']:>7.1f}  "
              f"{res['first_clip']:>26.1f}  {seconds / 60:>7.1f}  {'yes' if met else 'NO'}")
    print(f"targets: clip R@1 >= {TARGETS['clip']:.0f}x chance, HTM recall >= {TARGETS['recall']:.0f}x chance, "
          f"HTM AUC >= {TARGETS['auc']:.0f}; runs in {out}")


if __name__ == "__main__":
    main()
