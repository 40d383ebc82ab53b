"""The one family of user-facing errors.

Anything raised as a :class:`NortonError` is the user's to fix (a bad recipe, a broken plugin, a corrupt shard)
and the CLI prints it as one clean line per problem and exits 2. Every other exception is a bug in norton or a
plugin and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class NortonError(Exception):
    """Base class of every error the CLI reports without a traceback.

    ``problems`` holds one human-readable line per problem, so a validation pass can report all of them at once.
    """

    def __init__(self, message: str | None = None, problems: Iterable[str] = ()) -> None:
        self.problems: list[str] = list(problems)
        if message is None:
            message = self.problems[0] if len(self.problems) == 1 else f"{len(self.problems)} problems"
        super().__init__(message)

    def lines(self) -> list[str]:
        """The lines the CLI prints: each problem, or the message when there is no list."""
        return self.problems or [str(self)]


class RecipeError(NortonError):
    """A recipe (or a ``--set`` override) is invalid. Each problem names the file and dotted key path."""


class PluginError(NortonError):
    """A plugin failed to load, registered a clashing name, or is required but missing."""


class DataError(NortonError):
    """Input data or a shard store is missing, malformed or corrupt. Messages name the file and record."""


class CheckpointError(NortonError):
    """A checkpoint or run directory is unusable (corrupt, locked, incompatible with the recipe)."""


class TrainingError(NortonError):
    """Training stopped for a reason the user must act on (non-finite loss or gradient, ...)."""


class Preempted(NortonError):
    """The run received SIGTERM (a cluster preemption), committed a checkpoint and stopped; ``--resume`` continues.

    The CLI exits with 143 (128 + SIGTERM), the code schedulers expect from a terminated job.
    """

    exit_code = 143
