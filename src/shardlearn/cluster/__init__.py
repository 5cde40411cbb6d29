"""Distributed clustering estimators."""

from ._agglomerative import AgglomerativeClustering
from ._bisecting import BisectingKMeans
from ._kmeans import KMeans

__all__ = ["AgglomerativeClustering", "BisectingKMeans", "KMeans"]
