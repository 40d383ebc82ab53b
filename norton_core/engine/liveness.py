"""Knowing when the other ranks are gone, so that a multi-process run ends in one clear line instead of a gloo
traceback or orphaned processes.

- **Heartbeats.** Every rank bumps a counter in the rendezvous store (torchrun's, reached through
  ``MASTER_ADDR``/``MASTER_PORT``) twice a second from a daemon thread. When a collective fails, the survivors look
  at whose counter stopped and name that rank.
- **Parent death.** Under torchrun, each rank asks the kernel for SIGTERM when torchrun dies (Linux
  ``PR_SET_PDEATHSIG``). SIGTERM is the engine's preemption signal: the ranks agree at the next step boundary,
  commit a checkpoint and exit 143 instead of training on as orphans.

A rank that died makes its peers' next collective fail at once (its sockets close); torchrun then sends them
SIGTERM. Once a peer failure is being reported SIGTERM is ignored, so that the report is not cut short.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from norton_core.engine.distributed import Dist
from norton_core.errors import TrainingError

HEARTBEAT_S = 0.5
#: how long survivors watch the counters before naming the ranks whose counter did not move
CHECK_S = 1.5
_PR_SET_PDEATHSIG = 1
#: fragments of the errors gloo/NCCL/c10d raise when a peer or the store went away
_PEER_MARKERS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket Timeout",
                 "Connection refused")


def stop_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; True when armed. If the parent is already
    gone (it died before the request), the signal is sent now."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # re-parented between the two calls: the parent died before we asked
        os.kill(os.getpid(), sig)
    return True


class Peers:
    """Heartbeats of every rank in the rendezvous store; :meth:`dead_ranks` names the ranks that stopped."""

    def __init__(self, dist: Dist, store: Any) -> None:
        self.dist, self.store = dist, store
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "run")
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self._prefix = f"norton/heartbeat/{run_id}/{attempt}/"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="norton-heartbeat", daemon=True)

    def _key(self, rank: int) -> str:
        return f"{self._prefix}{rank}"

    def _beat(self) -> None:
        key, parent = self._key(self.dist.rank), os.getppid()
        while os.getppid() == parent:  # torchrun (which holds the store) died: nothing left to tell
            try:
                self.store.add(key, 1)
            except Exception:  # noqa: BLE001 - the store went away, which dead_ranks() reports; stop beating
                return
            if self._stop.wait(HEARTBEAT_S):
                return

    def start(self) -> Peers:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def _counters(self) -> dict[int, int | None]:
        out: dict[int, int | None] = {}
        for rank in range(self.dist.world_size):
            key = self._key(rank)
            out[rank] = self.store.add(key, 0) if self.store.check([key]) else None
        return out

    def dead_ranks(self, wait: float = CHECK_S) -> list[int] | None:
        """The other ranks whose heartbeat did not advance within ``wait`` seconds; None if the store is gone."""
        try:
            before = self._counters()
            time.sleep(wait)
            after = self._counters()
        except Exception:  # noqa: BLE001 - any store failure means: torchrun (or rank 0's store) is gone
            return None
        return [r for r in range(self.dist.world_size)
                if r != self.dist.rank and (after[r] is None or after[r] == before[r])]


def watch(dist: Dist, log: Callable[[str], None]) -> Peers | None:
    """Start heartbeats and parent-death detection for a multi-process run (None on one process)."""
    if not dist.enabled:
        return None
    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ:  # a torchrun worker
        stop_with_parent(signal.SIGTERM)
    try:
        import torch

        store = torch.distributed.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                           is_master=False, timeout=datetime.timedelta(seconds=5),
                                           wait_for_workers=False)
    except (KeyError, ValueError, RuntimeError) as exc:
        log(f"norton: warning: no heartbeats (the rendezvous store is unreachable: {exc}); if a rank dies, the "
            "others report a failed collective without naming it")
        return None
    return Peers(dist, store).start()


def _is_dist_error(exc: BaseException) -> bool:
    import torch

    dist_error = getattr(torch.distributed, "DistError", None)
    return dist_error is not None and isinstance(exc, dist_error)


def _is_peer_failure(exc: BaseException) -> bool:
    return _is_dist_error(exc) or (isinstance(exc, RuntimeError) and any(m in str(exc) for m in _PEER_MARKERS))


@contextlib.contextmanager
def peer_failures(dist: Dist, peers: Peers | None) -> Iterator[None]:
    """Turn a collective that failed because another rank (or torchrun) went away into one TrainingError line
    naming the dead rank(s)."""
    try:
        yield
    except Exception as exc:
        if not dist.enabled or not _is_peer_failure(exc):
            raise
        with contextlib.suppress(ValueError):  # the report must not be cut short by torchrun's SIGTERM
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        dead = peers.dead_ranks() if peers is not None else None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if dead:
            names = ", ".join(str(r) for r in dead)
            raise TrainingError(f"rank {names} of {dist.world_size} stopped (killed, or exited with its own error "
                                f"above); rank {dist.rank} stops too. Continue from the last committed checkpoint "
                                "with --resume") from None
        if peers is not None and dead is None:
            raise TrainingError(f"rank {dist.rank}: lost torchrun's rendezvous store while a collective failed (the "
                                f"launcher or the node holding it stopped): {detail[:200]}") from None
        if dead == [] and not _is_dist_error(exc):
            raise  # every rank is alive: not a peer failure after all
        raise TrainingError(f"rank {dist.rank}: a collective with the other {dist.world_size - 1} rank(s) failed: "
                            f"{detail[:200]}") from None
    finally:
        if peers is not None:
            peers.close()
