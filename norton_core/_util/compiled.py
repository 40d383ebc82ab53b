"""numba for norton's compiled CPU loops (the many-problems Sinkhorn, the retrieval round's k-smallest selection and
batch drawing): one place that picks the threading layer, serialises parallel launches and compiles with an on-disk cache.

Importing this module imports numba (~0.3 s); callers import it when a compiled loop first runs, so that importing
``norton_core`` or a plugin stays light.

The threading layer is chosen before numba starts its threads (the first parallel call). ``workqueue`` is numba's
own pthread pool: always present and fork-safe (DataLoader workers fork the training process; a forked child runs a
loop on 2 threads, checked). ``omp``: numba's OpenMP layer links the system's libgomp.so.1.0.0, a different file from
the libgomp.so.1 that torch bundles, so a second OpenMP runtime would be loaded beside torch's (two thread pools, each
sized to every core), and GNU OpenMP is not fork-safe; ``tbb`` needs a package norton does not ship. workqueue is not
thread-safe (two Python threads launching at once abort the process), hence :data:`LAUNCH`, which every parallel
launch in norton holds. A user who sets NUMBA_THREADING_LAYER keeps their choice.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numba
import torch

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]  # set by numba at import

#: held by every parallel launch of a compiled loop (workqueue aborts on concurrent launches)
LAUNCH = threading.Lock()
#: a first call slower than this compiled its loop (loading a cached copy takes well under a second): say so
COMPILE_NOTICE_SECONDS = 2.0


def compile_cached(function: Callable[..., Any], what: str, **options: Any) -> Any:
    """``numba.njit(cache=True, **options)(function)``: the machine code is kept on disk (beside the module, or in
    numba's user cache directory), so only the first process on a machine compiles it. Without a cache directory
    numba can write (a read-only install and home): a warning, and it is compiled in every process instead."""
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError as exc:
        warnings.warn(f"norton: the compiled {what} cannot be cached on disk ({exc}); it is compiled again in every "
                      "process (a few seconds)", RuntimeWarning, stacklevel=3)
        return numba.njit(cache=False, **options)(function)


def say_if_compiled(what: str, seconds: float) -> None:
    """After a loop's first call in a process: a call that took over :data:`COMPILE_NOTICE_SECONDS` compiled the
    loop (no cached copy yet), which stalls a run for seconds; say why on stderr, once."""
    if seconds > COMPILE_NOTICE_SECONDS:
        print(f"norton: compiled the {what} (numba) in {seconds:.1f}s; later processes on this machine load it from "
              "numba's cache", file=sys.stderr, flush=True)


def threads() -> int:
    """The process's torch thread count (``run.threads``), capped at the threads numba started."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
