"""Engines host the workers. Only ``ray_engine`` imports Ray, and only when used."""

from .base import Completed, Engine
from .local import LocalEngine


def make_engine(engine: str, n_workers=None, address=None, **kwargs) -> Engine:
    if engine == "local":
        if address is not None:
            raise ValueError("engine='local' runs in this process; address= is only for engine='ray'.")
        return LocalEngine(n_workers)
    if engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(n_workers, address=address, **kwargs)
    raise ValueError(f"Unknown engine {engine!r}; use 'local' (in-process threads) or 'ray'.")


__all__ = ["Completed", "Engine", "LocalEngine", "make_engine"]
