"""The component kinds a plugin can provide, and the small data types they exchange.

A component is an ordinary class with a class attribute ``name`` (what recipes write) and a nested frozen attrs
class ``Config`` (its options; see :func:`norton_core.recipe.options.option`). The engine builds it as
``cls(config, **context)`` where the keyword context is documented per kind below. Component code never imports
pluggy; a plugin registers its classes in a three-line hook implementation.

Kinds (the ``kind`` string used by :func:`norton_core.build` and ``norton plugins``):

======================  ==========================  ====================================================
kind                    base class                  recipe table
======================  ==========================  ====================================================
``data``                :class:`DataSource`         ``[data]``
``aligner``             :class:`Aligner`            ``[aligner]``, ``[retrieval.aligner]``
``model``               :class:`Model`              ``[model]``
``loss``                :class:`Loss`               ``[loss]``
``retrieval_backend``   :class:`RetrievalBackend`   ``[retrieval.backend]``
``evaluator``           :class:`Evaluator`          ``[evaluation.tasks.<name>]``
``metric_sink``         :class:`MetricSink`         ``[logging] sinks``, ``[logging.sink_options.<name>]``
``feature_extractor``   :class:`FeatureExtractor`   ``norton extract --extractor NAME``
======================  ==========================  ====================================================
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:  # heavy imports only for type checkers
    import random

    import numpy as np
    import torch

KINDS: tuple[str, ...] = ("data", "aligner", "model", "loss", "retrieval_backend", "evaluator", "metric_sink",
                          "feature_extractor")


@attrs.frozen
class EmptyConfig:
    """Config of a component that has no options."""


# ----------------------------------------------------------------------------------------------------------------
# data exchanged between components
# ----------------------------------------------------------------------------------------------------------------


@attrs.frozen
class SpecialTokens:
    """Token ids of the text encoder's tokenizer that aligners lay out around caption tokens."""

    cls: int
    sep: int
    pad: int


@attrs.frozen(eq=False)
class VideoRecord:
    """One video as read from a shard store.

    :ivar video_id: the id from the split list.
    :ivar features: ``(T, 512)`` float16 per-second features (a read-only view is allowed).
    :ivar starts: ``(n,)`` float32 caption start times in seconds, in time order.
    :ivar ends: ``(n,)`` float32 caption end times.
    :ivar tokens: ``n`` int32 arrays: each caption's token ids without special tokens and without padding.
    """

    video_id: str
    features: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    tokens: Sequence[np.ndarray]


@attrs.frozen
class DataPaths:
    """Where a data source put the prepared data.

    :ivar train: a prepared shard store directory (with ``manifest.json``) for training.
    :ivar val: the same for validation, when there is one.
    :ivar eval_root: a directory holding evaluation sets in their public layouts (``youcook2/``, ``htm_align/``,
        ``msrvtt/``), or None.
    """

    train: Path
    val: Path | None = None
    eval_root: Path | None = None


# ----------------------------------------------------------------------------------------------------------------
# component kinds
# ----------------------------------------------------------------------------------------------------------------


class Component(abc.ABC):
    """Common ground of every component: a registered ``name`` and a ``Config`` schema."""

    name: ClassVar[str]
    Config: ClassVar[type] = EmptyConfig
    #: Python packages (import names) the component needs beyond norton's own dependencies, each with how to install
    #: it: recipe validation (``norton validate``, and ``norton-run`` before anything starts) reports a missing one
    needs: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def missing_packages(cls) -> list[str]:
        """One line per package of :attr:`needs` that is not installed (recipe validation reports them)."""
        return [f"{cls.name!r} needs the {module} package, which is not installed ({how})"
                for module, how in cls.needs.items() if not _importable(module)]

    @classmethod
    def create(cls, config: Any, **context: Any) -> Any:
        """Build the component; the engine and :func:`norton_core.build` always go through here.

        The default raises :class:`~norton_core.errors.PluginError` for a missing package of :attr:`needs`, then
        returns ``cls(config, **context)``. A plugin may register a light class (``name`` + ``Config`` only)
        and override ``create`` to import its heavy implementation (torch, transformers) on first use, so that
        listing plugins and validating recipes stay fast.
        """
        missing = cls.missing_packages()
        if missing:
            from norton_core.errors import PluginError

            raise PluginError(problems=missing)
        # a component's constructor takes its config and the kind's context (the base class declares none)
        factory: Callable[..., Any] = cls
        return factory(config, **context)


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # already imported without a spec (a stand-in module): it is there
        return True


class DataSource(Component):
    """Makes training and evaluation data available as prepared shard stores.

    Built as ``cls(config, cache_dir=Path)``; ``cache_dir`` is where generated or prepared data may be kept.
    """

    @abc.abstractmethod
    def prepare(self, progress: bool = True) -> DataPaths:
        """Return the prepared paths, preparing them first if needed. Raise ``DataError`` naming what is missing
        and how to get it when the data cannot be had."""


class Aligner(Component):
    """Samples clip/caption pairs from one video and lays them out as model tokens, and owns how the clips of a
    batch's videos become one batch (:meth:`collate`).

    Built as ``cls(config, special_tokens=SpecialTokens)``.
    """

    clips_per_video: int

    @abc.abstractmethod
    def __call__(self, record: VideoRecord, rng: random.Random) -> dict[str, np.ndarray]:
        """Sample ``clips_per_video`` clips from ``record``.

        Returns numpy arrays with a leading clip axis C: ``caps`` (C, Lc) int64, ``cmasks`` (C, Lc) bool,
        ``vfeats`` (C, Lv, 512) float16 (the store's dtype; the collate converts once per batch), ``vmasks``
        (C, Lv) bool; the built-ins add ``video_start``, ``video_end``, ``text_start``, ``text_end`` (C,) int64.
        Clips are in temporal order. Deterministic given ``rng``'s state. Any further array with the leading clip
        axis (say per-clip weights) is carried into the batch by the default :meth:`collate`.
        """

    def collate(self, items: list[dict[str, np.ndarray]], video_ids: list[str]) -> dict[str, Any]:
        """Turn the outputs of :meth:`__call__` for the V videos of one batch into the model batch.

        Runs in DataLoader workers. The default (:func:`norton_core.data.collate.collate_clips`) concatenates every key
        along the clip axis into ``(V*C, ...)`` tensors and adds ``video_index``. An override may add, drop or
        reshape keys (per-video values, batch-normalised weights); it must return ``caps``, ``cmasks``, ``vfeats``
        (float), ``vmasks`` and ``video_index`` (V*C,) int64 as torch tensors. Every key it returns is moved to the
        device and reaches the model's ``forward_batch`` and the loss.
        """
        from norton_core.data.collate import collate_clips

        return collate_clips(items, video_ids)


class Model(Component):
    """A video-text dual encoder (a ``torch.nn.Module`` subclass in practice).

    Built as ``cls(config)``. ``forward(caps, cmasks, vfeats, vmasks)`` returns a dict with ``pooled_video``
    (B, d), ``pooled_text`` (B, d), ``video_outputs`` (B, Tv, d), ``text_outputs`` (B, Tt, d),
    ``video_mask_outputs`` (B, Tv) bool and ``text_mask_outputs`` (B, Tt) bool.
    """

    def forward_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The training step's forward pass over a whole collated batch (every key the aligner's ``collate``
        returned, on the device). The default reads the four layout tensors; a model that uses more of the batch
        (an aligner's extra keys) overrides this."""
        return self(batch["caps"], batch["cmasks"], batch["vfeats"], batch["vmasks"])  # type: ignore[operator]

    @abc.abstractmethod
    def forward_video(self, vfeats: torch.Tensor, vmasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode clips alone: ``(pooled (B, d), outputs (B, Lv + 2, d), mask_outputs (B, Lv + 2) bool)``.
        ``vfeats`` (B, Lv, 512) float, ``vmasks`` (B, Lv) bool; any Lv up to the position table (eval uses 32).
        A model may also take ``attend_cls: bool = True``; False masks the video [CLS] token out of attention
        (YouCook2 with background kept asks for it, as the reference does)."""

    @abc.abstractmethod
    def forward_text(self, caps: torch.Tensor, cmasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode captions laid out by :func:`norton_core.data.layout.build_text_seq`: ``(pooled, outputs, mask)``."""

    @abc.abstractmethod
    def special_tokens(self) -> SpecialTokens:
        """The tokenizer's special ids, for the aligners."""

    @abc.abstractmethod
    def tokenizer_name(self) -> str:
        """The tokenizer the model's text encoder expects (checked against the shard manifest)."""

    @abc.abstractmethod
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids without special tokens, for evaluation captions."""

    @abc.abstractmethod
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates (after the recipe's freezing policy)."""


class Loss(Component):
    """A training objective (a ``torch.nn.Module`` subclass in practice).

    Built as ``cls(config, rank=int, world_size=int)``. ``forward(outputs, batch)`` takes the model's output dict
    and the collated batch (every key the aligner's ``collate`` returned) and returns named terms: ``loss`` (the
    scalar to minimise) plus any ``*_loss`` parts and diagnostics (0-dim tensors).

    Precision contract: with ``train.precision = "bf16"``/``"fp16"`` the model runs under autocast. A loss with
    ``autocast = False`` (the default) runs outside it and receives the model's floating outputs as float32, so
    softmaxes, log-sum-exps and Sinkhorn iterations keep full precision. A loss that sets ``autocast = True`` runs
    inside the same autocast region as the model (cheaper, at reduced precision).
    """

    #: run under the training autocast (True) or in float32 on float32 outputs (False, the default)
    autocast: ClassVar[bool] = False

    def chance_levels(self, clips: int) -> dict[str, float]:
        """What each term is worth at chance for a batch of ``clips`` clip/caption pairs: the value it takes when
        the model's outputs say nothing about which clip goes with which caption (every row of logits flat), e.g.
        ``{"loss": 2 ln B}`` for a symmetric InfoNCE over B pairs.

        The engine watches ``"loss"`` against it and says when a run sits at chance (``[logging] chance_tolerance``
        and ``chance_share``); the other terms are for the reader. The default, an empty dict, declares nothing
        (nor does a ``"loss"`` of 0, a batch with nothing to contrast): the run is not watched, and says so once at
        its start.
        """
        return {}


class RetrievalBackend(Component):
    """A nearest-neighbour index over one vector per video, rebuilt every retrieval round.

    Built as ``cls(config, seed=int)``.
    """

    @abc.abstractmethod
    def build(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Index ``vectors`` (N, d) float32 under integer ``ids`` (N,) int64 (unique, 0..N-1)."""

    @abc.abstractmethod
    def search(self, query_ids: np.ndarray, k: int) -> np.ndarray:
        """Neighbours of indexed videos: (Q, k) int64 ids, nearest first, padded with -1 when fewer are found."""


@attrs.frozen
class EvalContext:
    """What an evaluator gets besides the model.

    :ivar root: the evaluation set directory in its public layout (see ``docs/data_formats.md``).
    :ivar batch_size: clips per forward pass.
    :ivar device: torch device string.
    :ivar progress: show a progress bar.
    """

    root: Path
    batch_size: int = 256
    device: str = "cpu"
    progress: bool = True
    options: Mapping[str, Any] = attrs.field(factory=dict)


class Evaluator(Component):
    """One evaluation task (a table of metrics). Built as ``cls(config)``."""

    #: the sub-directory of ``DataPaths.eval_root`` holding this task's files
    dataset: ClassVar[str] = ""
    #: the task's options (an instance of its ``Config``); the suite and the evaluation records read them
    config: Any

    def __init__(self, config: Any) -> None:
        self.config = config

    @abc.abstractmethod
    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        """Return ``{metric: value}`` (e.g. ``{"R@1": 12.5, ...}``; counts of skipped items as ``skipped_*``)."""


class MetricSink(Component):
    """Where a run's records go (a JSONL file, TensorBoard, Weights & Biases, ...). Built as
    ``cls(config, run_dir=Path)`` on rank 0 only, when ``[logging] sinks`` names it.

    Every record the engine appends to the run's log reaches :meth:`write`, in order: step records
    (``{"step", "epoch", <each loss term>, "lr", "grad_norm", "clips_per_s", "time"}``) and event records
    (``{"event": "retrieval" | "evaluation" | "validation" | "epoch_end" | "resume" | ..., "step", ...}``);
    :func:`norton_core.runs.scalars.scalars` turns either kind into ``(tag, value)`` pairs.
    """

    @abc.abstractmethod
    def start(self, run: Any) -> str:
        """Open the sink for ``run`` (a :class:`~norton_core.engine.RunContext`; ``run.recipe`` is the resolved
        recipe, to log as hyper-parameters). Returns where the records go, which the engine prints."""

    @abc.abstractmethod
    def write(self, record: Mapping[str, Any]) -> None:
        """Take one record (plain JSON data)."""

    def close(self) -> None:
        """Flush and close; called once at the end of the run, also when it fails or is preempted."""


@attrs.frozen
class DecodeSpec:
    """What a feature extractor needs from the video decoder (``norton extract`` decodes, the extractor embeds).

    Frames go through FFmpeg's ``fps`` filter, ``scale`` (the short side to ``short_side``, the other side in
    proportion) and, when ``crop`` is set, a centred ``crop`` to ``crop`` x ``crop``; then ``frames_per_row``
    consecutive frames make one chunk (the last one zero-padded) and each chunk becomes one output row.

    :ivar fps: output frame rate of the ``fps`` filter.
    :ivar short_side: the length the shorter side is scaled to.
    :ivar crop: side of the centred square crop, or None to keep the scaled frame.
    :ivar frames_per_row: frames in one chunk (one output row).
    :ivar mean: per-channel (RGB) mean subtracted after pixels are divided by 255.
    :ivar std: per-channel (RGB) divisor applied after the mean.
    """

    fps: int = attrs.field(default=30, validator=attrs.validators.gt(0))
    short_side: int = attrs.field(default=224, validator=attrs.validators.gt(0))
    crop: int | None = attrs.field(default=224)
    frames_per_row: int = attrs.field(default=30, validator=attrs.validators.gt(0))
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @crop.validator
    def _crop_fits(self, _attribute: Any, value: int | None) -> None:
        if value is not None and not 0 < value <= self.short_side:
            raise ValueError(f"DecodeSpec: crop {value} must be between 1 and short_side ({self.short_side})")

    @property
    def rows_per_second(self) -> float:
        return self.fps / self.frames_per_row


@attrs.frozen
class OutputSpec:
    """What a feature extractor writes: rows of ``width`` values stored as ``dtype`` (a numpy dtype name)."""

    width: int
    dtype: str = "float16"


class FeatureExtractor(Component):
    """Turns decoded video frames into feature rows (``norton extract --extractor NAME``).

    Built as ``cls(config, weights=Path | None, device=str)``: ``weights`` is the ``--weights`` file (None when not
    given), ``device`` a torch device string. An instance sets :attr:`decode` and :attr:`output` (they may depend
    on its config or weights) and :attr:`device`, where the runner puts the chunks it hands to :meth:`embed`.
    """

    #: the torch device :meth:`embed` takes its chunks on
    device: Any = "cpu"

    #: what the decoder must deliver
    decode: DecodeSpec
    #: the row width and storage dtype
    output: OutputSpec

    @abc.abstractmethod
    def embed(self, chunks: torch.Tensor) -> torch.Tensor:
        """Rows for a batch of chunks.

        :param chunks: ``(N, frames_per_row, 3, H, W)`` float32 on ``device``: RGB pixels / 255, then minus
            ``decode.mean`` and divided by ``decode.std`` per channel; ``H = W = decode.crop`` when cropping.
        :returns: ``(N, output.width)`` floating rows, one per chunk and in order; the runner casts them to
            ``output.dtype``. Each row must depend on its own chunk only (not on the others of the batch).
        """


ProgressFn = Callable[[int], None]
