"""Distributed PCA and truncated SVD: Gram and randomized range-finder solvers."""

from .solvers import SpectrumFit, fit_gram_spectrum, fit_randomized_spectrum, mle_dimension

__all__ = ["SpectrumFit", "fit_gram_spectrum", "fit_randomized_spectrum", "mle_dimension"]
