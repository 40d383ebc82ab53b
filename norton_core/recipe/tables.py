"""Schemas of the engine's own recipe tables: ``[run]``, ``[train]``, ``[retrieval]`` and ``[evaluation]``.

Component tables (``[data]``, ``[aligner]``, ``[model]``, ``[loss]``, ``[retrieval.aligner]``,
``[retrieval.backend]``, ``[evaluation.task_options.<task>]``) are validated by their components' own schemas.
"""

from __future__ import annotations

import os
from typing import Literal

import attrs

from norton_core.recipe.options import option

#: the bound of ``run.threads``: more threads than CPUs never help, and 10**9 kills OpenMP at start-up
MACHINE_CPUS = os.cpu_count() or 1
#: the largest seed: numpy's legacy seeding and torch's DataLoader workers take 32-bit seeds
MAX_SEED = 2**32 - 1
#: the longest run name: it names a directory, and file systems allow 255 bytes per name (room is left for the
#: suffixes norton adds to names beside it, such as ``.partial``)
MAX_RUN_NAME = 200


@attrs.frozen
class RunConfig:
    name: str = option("run", help="run name: the run directory is <output_dir>/<name> ([A-Za-z0-9._-]+, at "
                                         "most 200 characters)")
    output_dir: str = option("runs", path=True, help="directory holding run directories (relative to the working "
                                                     "directory)")
    seed: int = option(1, ge=0, le=MAX_SEED, help="seed of every random stream of the run (numpy and the "
                                                   "DataLoader take seeds below 2**32)")
    device: Literal["auto", "cpu", "cuda"] = option("auto", help="where to train; auto = cuda when available")
    deterministic: bool = option(False, help="deterministic algorithms and fixed threads (bit-exact resume tests)")
    threads: int = option(0, ge=0, le=MACHINE_CPUS, help="torch intra-op threads; 0 = torch's default; at most "
                                                         "this machine's CPUs (more only oversubscribe them)")
    init_from: str = option("", path=True, help="start from weights: a run directory, a checkpoint directory or a "
                                     ".safetensors file (e.g. converted VideoCLIP weights); empty = fresh")
    cache_dir: str = option("", path=True, help="where data sources keep generated/prepared data; empty = ~/.cache/norton")
    pretrain_recipe: str = option("", help="a recipe trained first, when its run is not complete yet: a shipped "
                                           "recipe's name or a path relative to the recipe file that sets it; its "
                                           "final weights initialise this run unless init_from is set (the demo's "
                                           "VideoCLIP stage before Norton)")


@attrs.frozen
class TrainConfig:
    epochs: int = option(6, ge=0, help="number of epochs (the reference's max_epoch)")
    videos_per_batch: int = option(64, ge=1, help="V: videos per batch (each gives the aligner's C clips)")
    max_steps: int = option(0, ge=0, help="stop after this many optimizer steps; 0 = no limit")
    optimizer: Literal["adam", "adamw"] = option("adam")
    lr: float = option(1e-5, gt=0.0)
    lr_scales: dict[str, float] = option(factory=dict, help="per-module learning rates: parameter-name prefix -> "
                                                           "multiplier of lr (e.g. { text_encoder = 0.1 } for a "
                                                           "pretrained encoder beside new layers; the longest "
                                                           "matching prefix wins, others get 1)")
    betas: list[float] = option(factory=lambda: [0.9, 0.98])
    eps: float = option(1e-8, gt=0.0)
    weight_decay: float = option(0.0, ge=0.0)
    warmup_updates: int = option(1000, ge=0, help="linear warm-up from 0 to lr over this many steps")
    total_updates: int = option(1_000_000, ge=1, help="polynomial decay reaches end_lr at this step")
    end_lr: float = option(0.0, ge=0.0)
    power: float = option(1.0, gt=0.0, help="polynomial decay power (1 = linear)")
    clip_norm: float = option(2.0, ge=0.0, help="gradient clipping max norm; 0 = off")
    precision: Literal["fp32", "bf16", "fp16", "auto"] = option(
        "fp32", help="autocast dtype (fp16 only on CUDA); auto = bf16 where the hardware has it (CUDA, or a CPU "
                     "with AVX512-BF16/AMX), else fp16 on CUDA and fp32 on CPU (emulated bf16 is ~10x slower)")
    grad_accum: int = option(1, ge=1, help="batches accumulated per optimizer step")
    num_workers: int = option(0, ge=0, help="DataLoader worker processes")
    read_mode: Literal["mmap", "pread"] = option("mmap", help="shard reads: mmap (data fits the page cache) or "
                                                             "pread (explicit reads; datasets larger than RAM)")
    check_finite: bool = option(True, help="refuse a video with NaN/inf features when it is read, before it reaches "
                                           "the model or the retrieval index, naming file, video and row; on by "
                                           "default: it costs ~0.1% of a demo step (benchmarks/integrity_bench.py)")
    check_chunks: bool = option(True, help="hash each 4 MiB chunk of a shard file the first time a process reads it "
                                           "and refuse content that differs from the manifest's chunk hashes; on by "
                                           "default: ~0.1% of a demo step (integrity_bench.py); needs a store "
                                           "prepared with hashes")
    log_every: int = option(10, ge=1, help="steps between JSONL metric lines")
    checkpoint_every: int = option(0, ge=0, help="steps between checkpoints; 0 = at epoch ends only")
    keep_last: int = option(2, ge=1, help="checkpoints kept (older ones are removed after a new one commits; "
                                          "checkpoints/best is kept besides them)")
    validate: bool = option(True, help="at each scheduled checkpoint compute the loss on the data source's validation "
                                       "split (data.val; the same seeded clips every time, no gradient) and keep "
                                       "the checkpoint with the lowest one in checkpoints/best")
    on_nonfinite: Literal["error", "skip"] = option("error", help="a non-finite loss or gradient stops or skips")
    max_consecutive_skips: int = option(10, ge=1)


@attrs.frozen
class RetrievalConfig:
    enabled: bool = option(True, help="retrieval-augmented epochs; false = random batches every epoch")
    start_epoch: int = option(1, ge=1, help="the reference's retri_epoch: first epoch with retrieved batches")
    num_cands: int = option(192, ge=1, help="neighbours searched per query video; V of them form a batch")
    embed_videos_per_batch: int = option(1024, ge=1, help="videos per embedding forward (infer_scale x V)")
    recall_sample: int = option(64, ge=0, help="the round's query videos (drawn among them) checked against exact "
                                "search for the logged neighbour recall (a diagnostic, logged with its standard "
                                "error over these queries); each query is one product with every vector (64 at "
                                "1.1M x 768: 0.1 TFLOP); 0 = off")
    # reproduction switches (ablations and exact reproduction of the reference; the defaults are ours)
    index: Literal["global", "per_rank"] = option(
        "global", help="global: one index over every video, gathered from all ranks; per_rank: as the reference, "
                       "each rank's fixed share of the videos (a seed-0 shuffle dealt out by rank, the same every "
                       "epoch) is indexed and searched on its own, and each share gives floor(N_share / V) batches")
    index_shares: int = option(0, ge=0, help="with index = per_rank: how many ranks' shares to split the videos "
                                             "into; 0 = the world size (the reference trained on 2 GPUs)")
    short_batches: Literal["top_up", "keep"] = option(
        "top_up", help="a neighbour list with fewer than V videos: top_up with random videos (every batch has V), "
                       "or keep it as a short batch (the reference)")


@attrs.frozen
class EvaluationConfig:
    tasks: list[str] = option(factory=list, help="evaluator names, run at the end of training")
    suite: Literal["", "paper"] = option(
        "", help="paper: also every task of the papers' zero-shot table (added to tasks); those whose dataset is not "
                 "under the evaluation root are left out with a line saying so")
    before: bool = option(False, help="also evaluate the initial model, for a before/after table")
    after: bool = option(True)
    batch_size: int = option(256, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = option(
        "fp32", help="evaluation precision, the same in the run's own evaluation and in norton evaluate (the "
                     "reference evaluates in float32); the training autocast never applies")


@attrs.frozen
class LoggingConfig:
    sinks: list[str] = option(factory=lambda: ["jsonl"], help="metric sinks every record of the run goes to: jsonl "
                                                              "(metrics.jsonl), tensorboard, wandb, or a plugin's")
    chance_tolerance: float = option(0.03, ge=0.0, lt=1.0, help="a step is at chance when its loss is within this "
                                     "share of the loss's chance value (2 ln B for InfoNCE over B pairs); 0 = do "
                                     "not watch")
    chance_share: float = option(0.5, gt=0.0, le=1.0, help="say that the run is at chance (log lines, the run's "
                                 "records, norton runs) once at least this share of its steps so far were, after "
                                 "at least 5 steps")
