"""``exp(x)`` for ``x <= 0`` over a block of values, in loops the compiler vectorises.

numba calls the C library's scalar ``exp`` per value (4-10 ns on the 2-core VMs
this was measured on, the larger part of the logistic gradient pass); these
loops run 4-8 values a vector instruction (about 1.4 ns a value on AVX-512).

Method (Cody and Waite's range reduction): ``x = k ln 2 + r`` with ``k`` the
nearest integer to ``x / ln 2`` and ``|r| <= ln 2 / 2``; ``ln 2`` is split in a
head with trailing zero bits (so ``k * head`` is exact) and a tail. ``exp(r)`` is
its Taylor polynomial of degree 13 (the remainder is below 1e-17 relative) in
Horner form, and ``2**k`` is added to its exponent field. Adding ``1.5 * 2**52``
to ``x / ln 2`` rounds it to an integer in the low bits of the sum, read back
through an integer view: the compiler cannot vectorise a float to int64
conversion on every CPU. Within 1 ulp of the C library's ``exp`` (measured over
[-700, 0]); inputs below -700 are taken as -700 (``exp(-700)`` is 1e-304: a
logistic probability or loss term that small is 0 at any precision this is used
for), which keeps ``2**k`` a normal number.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Inputs below this are clamped to it (see the module docstring).
LOWEST = -700.0
_INV_LN2 = 1.0 / math.log(2.0)
_LN2_HEAD = float.fromhex("0x1.62e42fee00000p-1")      # 32 trailing zero bits
_LN2_TAIL = float.fromhex("0x1.a39ef35793c76p-33")   # ln 2 - head, to 53 bits
_ROUNDER = 1.5 * 2.0 ** 52
_ROUNDER_BITS = int(np.float64(_ROUNDER).view(np.int64))
_C = tuple(1.0 / math.factorial(i) for i in range(14))
_EXPONENT_SHIFT = 52


@njit(nogil=True, cache=True)
def exp_nonpositive(x, out, scratch, n):
    """``out[:n] = exp(x[:n])`` for values ``<= 0`` (see the module docstring);
    ``scratch``: float64 of at least ``n`` values. All three 1-D, contiguous."""
    c = _C
    for i in range(n):
        v = max(x[i], LOWEST)
        t = v * _INV_LN2 + _ROUNDER
        scratch[i] = t
        k = t - _ROUNDER
        r = (v - k * _LN2_HEAD) - k * _LN2_TAIL
        p = c[13] * r + c[12]
        p = p * r + c[11]
        p = p * r + c[10]
        p = p * r + c[9]
        p = p * r + c[8]
        p = p * r + c[7]
        p = p * r + c[6]
        p = p * r + c[5]
        p = p * r + c[4]
        p = p * r + c[3]
        p = p * r + c[2]
        p = p * r + c[1]
        out[i] = p * r + c[0]
    kbits = scratch.view(np.int64)
    obits = out.view(np.int64)
    for i in range(n):
        obits[i] += (kbits[i] - _ROUNDER_BITS) << _EXPONENT_SHIFT
