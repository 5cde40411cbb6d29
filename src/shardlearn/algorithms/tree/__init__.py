"""Histogram trees: binning, numba kernels, split finding, level-wise and best-first growth,
model arrays."""
