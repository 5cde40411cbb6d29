"""Start a worker process's numba runtime before its first kernel needs it.

The first call of any numba function in a process, even one loaded from the
on-disk cache, initialises LLVM and numba's runtime: about 0.2 s here, plus 0.2 s
to import numba. A fresh Ray actor would otherwise pay it inside the user's first
fit (in its first step, so the whole cluster waits); a background thread started
with the actor pays it while the cluster is still being set up.
"""

from __future__ import annotations

import threading

_done = threading.Event()
_ok = False


def _warm() -> None:
    global _ok
    try:
        from numba import njit

        # Cached like the kernels: loading it is what initialises the runtime.
        _ok = njit(cache=True, nogil=True)(_plus_one)(1) == 2
    except Exception:  # noqa: BLE001 - an optimisation only: the kernels will say what fails
        pass
    finally:
        _done.set()


def _plus_one(x):
    return x + 1


def start_in_background() -> threading.Thread:
    """Warm numba on a daemon thread; :func:`is_warm` tells when it is done."""
    t = threading.Thread(target=_warm, name="shardlearn-numba-warmup", daemon=True)
    t.start()
    return t


def is_warm(timeout: float | None = 0.0) -> bool:
    """Whether the warm-up finished and worked (waiting up to ``timeout`` seconds)."""
    return _done.wait(timeout) and _ok
