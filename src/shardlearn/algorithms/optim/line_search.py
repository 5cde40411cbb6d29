"""Strong-Wolfe line search (bracketing and zoom, Nocedal & Wright, Algorithms 3.5/3.6)."""

from __future__ import annotations

import math


def _cubic_min(a, fa, ga, b, fb, gb):
    """Minimiser of the cubic through (a, fa, ga) and (b, fb, gb), or None if it has none."""
    d1 = ga + gb - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - ga * gb
    if disc < 0:
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = gb - ga + 2.0 * d2
    if denom == 0:
        return None
    return b - (b - a) * (gb + d2 - d1) / denom


def wolfe_line_search(phi, f0, g0, step0=1.0, *, c1=1e-4, c2=0.9, max_evals=50):
    """Find a step satisfying the strong Wolfe conditions along a descent direction.

    ``phi(t)`` returns ``(f, dphi, payload)`` at step ``t`` (payload: whatever the
    caller needs back, e.g. the gradient). Returns ``(t, f, payload, n_evals)``, or
    ``(None, f0, None, n_evals)`` when no acceptable step was found.
    """
    if g0 >= 0:
        return None, f0, None, 0
    t_prev, f_prev, g_prev = 0.0, f0, g0
    t = step0
    evals = 0
    best = (None, f0, None)
    while evals < max_evals:
        f, g, payload = phi(t)
        evals += 1
        if f < best[1]:
            best = (t, f, payload)
        if f > f0 + c1 * t * g0 or (evals > 1 and f >= f_prev):
            return _zoom(phi, f0, g0, t_prev, f_prev, g_prev, t, f, g, c1, c2, evals, max_evals, best)
        if abs(g) <= -c2 * g0:
            return t, f, payload, evals
        if g >= 0:
            return _zoom(phi, f0, g0, t, f, g, t_prev, f_prev, g_prev, c1, c2, evals, max_evals, best)
        t_prev, f_prev, g_prev = t, f, g
        t = t * 2.0
    return (*best, evals) if best[0] is not None else (None, f0, None, evals)


def _zoom(phi, f0, g0, lo, f_lo, g_lo, hi, f_hi, g_hi, c1, c2, evals, max_evals, best):
    while evals < max_evals:
        t = _cubic_min(lo, f_lo, g_lo, hi, f_hi, g_hi)
        width = abs(hi - lo)
        lo_end, hi_end = min(lo, hi), max(lo, hi)
        # Safeguard: stay well inside the bracket.
        if t is None or not (lo_end + 0.1 * width <= t <= hi_end - 0.1 * width):
            t = 0.5 * (lo + hi)
        f, g, payload = phi(t)
        evals += 1
        if f < best[1]:
            best = (t, f, payload)
        if f > f0 + c1 * t * g0 or f >= f_lo:
            hi, f_hi, g_hi = t, f, g
        else:
            if abs(g) <= -c2 * g0:
                return t, f, payload, evals
            if g * (hi - lo) >= 0:
                hi, f_hi, g_hi = lo, f_lo, g_lo
            lo, f_lo, g_lo = t, f, g
        if width < 1e-14 * max(1.0, abs(lo)):
            break
    return (*best, evals) if best[0] is not None else (None, f0, None, evals)
