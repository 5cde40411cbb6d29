"""Coordinator-side optimisers over a :class:`DistributedObjective`.

Both run plain numpy/scipy on the driver; each objective call is one
distributed pass. Deterministic: the same gradients give the same iterates.
``lbfgs`` is shardlearn's own L-BFGS (:mod:`shardlearn.algorithms.optim`), whose
whole state fits in a checkpoint, so a fit resumed after a driver crash ends
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning

from ..optim import LBFGSState, lbfgs

SOLVERS = ("lbfgs", "trust-ncg")


@dataclass
class SolverResult:
    w: np.ndarray
    n_iter: int
    converged: bool
    history: list[float] = field(default_factory=list)
    message: str = ""


def minimize_objective(objective, w0, *, solver="lbfgs", tol=1e-4, max_iter=100,
                       bar=None, estimator="model", checkpoint=None, resume=None) -> SolverResult:
    """Minimise ``objective`` from ``w0``.

    ``lbfgs``: L-BFGS with scikit-learn's stopping rules (max |gradient| <= tol,
    or relative decrease <= 64 eps), one distributed pass per function
    evaluation. ``trust-ncg``: Newton-CG trust region with distributed
    Hessian-vector products; fewer outer iterations on ill-conditioned problems.

    Parameters
    ----------
    checkpoint : CheckpointStore, optional
        lbfgs only: the solver state is saved there every ``checkpoint.every`` iterations.
    resume : CheckpointStore, optional
        lbfgs only: continue from the state saved there instead of ``w0``.
    """
    history: list[float] = []
    if solver == "lbfgs":
        state = None
        if resume is not None:
            _, arrays, meta = resume.load()
            state = LBFGSState.from_arrays(arrays, meta)
            if state.status == "max_iter":
                state.status = "running"   # resumed with a larger budget
            if bar is not None:
                bar.advance(state.n_iter, info="resumed")

        def on_iteration(st):
            if bar is not None:
                bar.advance(1, info=f"objective {st.f:.6g}")
            if checkpoint is not None:
                checkpoint.maybe_save(st.n_iter, st.to_arrays)

        state = lbfgs(objective.loss_grad, w0, state=state, gtol=tol, max_iter=max_iter,
                      callback=on_iteration)
        if checkpoint is not None and state.n_iter % checkpoint.every:
            checkpoint.save(state.n_iter, *state.to_arrays())
        x, fun, n_iter = state.x, state.f, state.n_iter
        converged = state.status == "converged"
        message = state.status
        history = list(state.history)
    elif solver == "trust-ncg":
        if checkpoint is not None or resume is not None:
            raise ValueError("checkpoint/resume needs solver='lbfgs' (trust-ncg keeps its state "
                             "inside scipy, where it cannot be saved).")

        def callback(intermediate_result):
            history.append(float(intermediate_result.fun))
            if bar is not None:
                bar.advance(1, info=f"objective {intermediate_result.fun:.6g}")

        res = minimize(objective.loss_grad, w0, method="trust-ncg", jac=True,
                       hessp=objective.hessp, options={"maxiter": max_iter, "gtol": tol},
                       callback=callback)
        x, fun, n_iter = np.asarray(res.x), float(res.fun), int(res.nit)
        converged, message = bool(res.success), str(res.message)
    else:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    if not converged and n_iter >= max_iter:
        warnings.warn(
            f"{estimator}: the {solver} solver did not converge in max_iter={max_iter} "
            f"iterations ({message}). Increase max_iter or scale the data.",
            ConvergenceWarning, stacklevel=3,
        )
    # The history ends with the objective at the returned point (also when the
    # solver stopped before completing an iteration, e.g. max_iter=0).
    if not history or history[-1] != fun:
        history.append(fun)
    return SolverResult(x, n_iter, converged, history, message)
