"""``shardlearn info``: versions, CPUs, and what an engine reports."""

from __future__ import annotations

import os
import platform
import sys

import click

from ._common import ENGINES, address_option, console, start_session, user_errors

PACKAGES = ("shardlearn", "numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "fsspec",
            "s3fs", "ray", "click", "rich")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    from .._version import __version__

    out["shardlearn"] = __version__
    return out


def cpu_counts() -> tuple[int | None, int | None]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return os.cpu_count(), usable


@click.command()
@click.option("--engine", type=click.Choice(ENGINES), default=None,
              help="Also start this engine briefly and show what it reports.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Workers to start with --engine (default: one per CPU).")
@address_option
def info(engine, workers, address):
    """Show versions, CPU count and (with --engine) what the engine reports."""
    from rich.table import Table

    if engine is None and (workers is not None or address is not None):
        raise click.UsageError("--workers and --address need --engine.")
    con = console()
    table = Table(title="shardlearn environment", show_header=True)
    table.add_column("item")
    table.add_column("value")
    for name, ver in package_versions().items():
        table.add_row(name, ver)
    total, usable = cpu_counts()
    table.add_row("platform", f"{platform.system()} {platform.release()} ({platform.machine()})")
    table.add_row("python executable", sys.executable)
    table.add_row("CPUs", f"{total} ({usable} usable by this process)" if usable else str(total))
    con.print(table)
    if engine is None:
        return
    with user_errors():
        session = start_session(engine, workers, address)
        try:
            desc = session.describe()
        finally:
            session.shutdown()
    etable = Table(title=f"engine {engine!r}", show_header=True)
    etable.add_column("key")
    etable.add_column("value")
    for k, v in desc.items():
        etable.add_row(str(k), str(v))
    con.print(etable)
