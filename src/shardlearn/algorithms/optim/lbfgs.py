"""Limited-memory BFGS whose complete state is a few arrays: checkpointable and resumable.

Same stopping rules as scikit-learn's use of L-BFGS-B (projected-gradient max-norm
<= gtol, or relative decrease of f <= ftol), a strong-Wolfe line search, and the
standard two-loop recursion with the Shanno-Phua initial scaling. Given the same
function values and gradients it takes the same steps, so a fit resumed from a
checkpoint ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .line_search import wolfe_line_search

#: Relative decrease of f below which L-BFGS stops (scikit-learn's L-BFGS-B setting).
DEFAULT_FTOL = 64 * np.finfo(float).eps


@dataclass
class LBFGSState:
    """Everything L-BFGS needs to continue: iterate, value, gradient and curvature pairs."""

    x: np.ndarray
    f: float
    g: np.ndarray
    S: np.ndarray                     # (m, n) recent steps, oldest first
    Y: np.ndarray                     # (m, n) recent gradient changes
    n_iter: int = 0
    n_evals: int = 1
    history: list[float] = field(default_factory=list)
    status: str = "running"

    def to_arrays(self) -> tuple[dict, dict]:
        arrays = {"x": self.x, "g": self.g, "S": self.S, "Y": self.Y,
                  "history": np.asarray(self.history, dtype=np.float64)}
        meta = {"f": self.f, "n_iter": self.n_iter, "n_evals": self.n_evals, "status": self.status}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict, meta: dict) -> LBFGSState:
        return cls(x=arrays["x"], f=float(meta["f"]), g=arrays["g"], S=arrays["S"], Y=arrays["Y"],
                   n_iter=int(meta["n_iter"]), n_evals=int(meta["n_evals"]),
                   history=[float(v) for v in arrays["history"]], status=str(meta["status"]))


def _direction(g, S, Y):
    q = -g.copy()
    k = S.shape[0]
    rho = np.empty(k)
    alpha = np.empty(k)
    for i in range(k - 1, -1, -1):
        rho[i] = 1.0 / float(Y[i] @ S[i])
        alpha[i] = rho[i] * float(S[i] @ q)
        q -= alpha[i] * Y[i]
    if k:
        q *= float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1])
    for i in range(k):
        beta = rho[i] * float(Y[i] @ q)
        q += (alpha[i] - beta) * S[i]
    return q


def lbfgs(fun: Callable, x0=None, *, state: LBFGSState | None = None, gtol=1e-4,
          ftol=DEFAULT_FTOL, max_iter=100, memory=10,
          callback: Callable | None = None) -> LBFGSState:
    """Minimise ``fun(x) -> (f, grad)`` from ``x0``, or continue from ``state``.

    ``callback(state)`` runs after every iteration (progress, checkpoints).
    The returned state's ``status`` is "converged", "max_iter" or "line_search_failed".
    """
    if state is None:
        x = np.array(x0, dtype=np.float64)
        f, g = fun(x)
        state = LBFGSState(x=x, f=float(f), g=np.asarray(g, dtype=np.float64),
                           S=np.empty((0, x.size)), Y=np.empty((0, x.size)))
    if state.status != "running":
        return state
    if np.max(np.abs(state.g), initial=0.0) <= gtol:
        state.status = "converged"
        return state
    while state.n_iter < max_iter:
        d = _direction(state.g, state.S, state.Y)
        slope = float(state.g @ d)
        if slope >= 0:                      # lost descent: restart from steepest descent
            state.S, state.Y = state.S[:0], state.Y[:0]
            d = -state.g
            slope = float(state.g @ d)
        step0 = 1.0 if state.n_iter > 0 else min(1.0, 1.0 / max(np.max(np.abs(state.g)), 1e-300))

        def phi(t, x=state.x, d=d):
            xt = x + t * d
            ft, gt = fun(xt)
            gt = np.asarray(gt, dtype=np.float64)
            return float(ft), float(gt @ d), (xt, gt)

        t, f_new, payload, evals = wolfe_line_search(phi, state.f, slope, step0)
        state.n_evals += evals
        if t is None:
            state.status = "line_search_failed"
            return state
        x_new, g_new = payload
        s, y = x_new - state.x, g_new - state.g
        if float(s @ y) > 1e-10 * float(y @ y):
            state.S = np.vstack([state.S, s])[-memory:]
            state.Y = np.vstack([state.Y, y])[-memory:]
        f_old = state.f
        state.x, state.f, state.g = x_new, f_new, g_new
        state.n_iter += 1
        state.history.append(f_new)
        if np.max(np.abs(g_new)) <= gtol or (f_old - f_new) <= ftol * max(abs(f_old), abs(f_new), 1.0):
            state.status = "converged"
        elif state.n_iter >= max_iter:
            state.status = "max_iter"
        if callback is not None:
            callback(state)
        if state.status != "running":
            return state
    state.status = "max_iter"
    return state
