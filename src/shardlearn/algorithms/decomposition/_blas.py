"""BLAS rank-k / rank-1 symmetric updates that release the GIL.

scipy.linalg.blas's ``dsyrk``/``dsyr`` hold the GIL while they run, so the
in-process engine's worker threads would take turns. These call the same BLAS
routines (scipy's ``cython_blas`` function pointers, hence the same bits)
through ctypes, which releases the GIL for the duration of the call.
"""

from __future__ import annotations

import ctypes

import numpy as np
from scipy.linalg import cython_blas

_c_int_p = ctypes.POINTER(ctypes.c_int)
_c_double_p = ctypes.POINTER(ctypes.c_double)


def _blas_function(name: str, *argtypes):
    capsule = cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, get_name(capsule))
    return ctypes.CFUNCTYPE(None, *argtypes)(address)


_dsyrk = _blas_function("dsyrk", ctypes.c_char_p, ctypes.c_char_p, _c_int_p, _c_int_p,
                        _c_double_p, _c_double_p, _c_int_p, _c_double_p, _c_double_p, _c_int_p)
_dsyr = _blas_function("dsyr", ctypes.c_char_p, _c_int_p, _c_double_p, _c_double_p, _c_int_p,
                       _c_double_p, _c_int_p)


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_c_double_p)


def syrk_upper(C: np.ndarray, B: np.ndarray, alpha: float = 1.0) -> None:
    """``C += alpha * B^T B`` on the upper triangle, in place.

    ``C``: Fortran-ordered (d, d) float64; ``B``: C-contiguous (k, d) float64.
    """
    k, d = B.shape
    assert C.flags.f_contiguous and C.shape == (d, d) and B.flags.c_contiguous
    n_, k_, ld = ctypes.c_int(d), ctypes.c_int(k), ctypes.c_int(d)
    a_, b_ = ctypes.c_double(alpha), ctypes.c_double(1.0)
    # Row-major B (k x d) is the column-major d x k matrix B^T: C += B^T (B^T)^T.
    _dsyrk(b"U", b"N", ctypes.byref(n_), ctypes.byref(k_), ctypes.byref(a_), _ptr(B),
           ctypes.byref(ld), ctypes.byref(b_), _ptr(C), ctypes.byref(ld))


def syr_upper(C: np.ndarray, x: np.ndarray, alpha: float) -> None:
    """``C += alpha * x x^T`` on the upper triangle, in place (``C`` Fortran-ordered)."""
    d = C.shape[0]
    x = np.ascontiguousarray(x, dtype=np.float64)
    n_, inc, ld, a_ = ctypes.c_int(d), ctypes.c_int(1), ctypes.c_int(d), ctypes.c_double(alpha)
    _dsyr(b"U", ctypes.byref(n_), ctypes.byref(a_), _ptr(x), ctypes.byref(inc), _ptr(C),
          ctypes.byref(ld))
