"""shardlearn: distributed machine learning on a coordinator and workers.

One laptop (``engine="local"``) or a Ray cluster (``engine="ray"``), same code.
"""

from ._version import __version__
from .data import Dataset, read_csv, read_parquet
from .io.model_files import load_model as load
from .progress import set_progress
from .runtime import Coordinator, FitReport, Session, init, shutdown


def save(model, path, storage_options: dict | None = None) -> None:
    """Save a fitted shardlearn model to ``path`` or a storage URL (JSON + npz, no pickle)."""
    model.save(path, storage_options=storage_options)


__all__ = [
    "Coordinator", "Dataset", "FitReport", "Session", "__version__", "init", "load",
    "read_csv", "read_parquet", "save", "set_progress", "shutdown",
]
