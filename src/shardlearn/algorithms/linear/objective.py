"""The regularised objective of a linear model, evaluated over all shards.

    F(w) = (1/S) * sum_i s_i * loss_i(w) + (1 / (2 C S)) * ||w_penalised||^2

with S the total row weight: scikit-learn's LogisticRegression objective, and
liblinear's LinearSVC objective divided by C*S (same minimiser).
"""

from __future__ import annotations

import numpy as np

from ...comm.reduce import ordered_reduce


class DistributedObjective:
    """Loss, gradient and Hessian-vector products summed over shards in shard order.

    Parameters
    ----------
    coordinator : Coordinator
    loss_grad, hessp : worker kernels
    kernel_args : tuple
        Extra arguments passed to both kernels after ``w`` / ``v``.
    total_weight : float
        S, the sum of row weights over all shards.
    C : float
    penalty_mask : ndarray of shape (n_params,)
        Weight of each parameter's square in the penalty: 1.0 for coefficients,
        0.0 for unpenalised intercepts, ``1 / intercept_scaling**2`` for
        liblinear's penalised intercept. The penalty is
        ``(1 / (2 C S)) * sum_j mask_j * w_j**2``.
    """

    def __init__(self, coordinator, loss_grad, hessp, kernel_args, total_weight, C, penalty_mask):
        self.coordinator = coordinator
        self.loss_grad_kernel = loss_grad
        self.hessp_kernel = hessp
        self.kernel_args = tuple(kernel_args)
        self.S = float(total_weight)
        self.alpha = 1.0 / (C * self.S)
        self.mask = penalty_mask
        self.n_evals = 0
        self._last_w = None

    def loss_grad(self, w):
        w = np.ascontiguousarray(w, dtype=np.float64)
        loss, grad = ordered_reduce(self.coordinator.map(
            self.loss_grad_kernel, w, *self.kernel_args, step="loss_grad", restore="latest"))
        self.n_evals += 1
        self._last_w = w.copy()
        wp = w * self.mask
        f = loss / self.S + 0.5 * self.alpha * float(wp @ w)
        g = grad / self.S + self.alpha * wp
        return f, g

    def hessp(self, w, v):
        # Kernels keep the curvature of the last gradient point; refresh it if the
        # solver asks about another point.
        if self._last_w is None or not np.array_equal(self._last_w, w):
            self.loss_grad(w)
        v = np.ascontiguousarray(v, dtype=np.float64)
        hv = ordered_reduce(self.coordinator.map(self.hessp_kernel, v, *self.kernel_args,
                                                 step="hessp"))
        return hv / self.S + self.alpha * (v * self.mask)
