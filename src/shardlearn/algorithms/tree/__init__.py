"""Histogram trees: binning, numba kernels, split finding, level-wise growth, model arrays."""
