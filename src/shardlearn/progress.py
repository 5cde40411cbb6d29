"""Progress bars for long work, shown only in a terminal (or when forced)."""

from __future__ import annotations

import contextlib
import os
import sys

#: "auto" shows bars when stderr is a terminal; "always" / "never" force it.
#: The environment variable SHARDLEARN_PROGRESS sets the default.
_mode = {"value": os.environ.get("SHARDLEARN_PROGRESS", "auto")}


def set_progress(mode: str) -> None:
    """Choose when progress bars appear: ``"auto"``, ``"always"`` or ``"never"``."""
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"progress mode must be 'auto', 'always' or 'never', got {mode!r}.")
    _mode["value"] = mode


def progress_enabled() -> bool:
    mode = _mode["value"]
    return mode == "always" or (mode == "auto" and sys.stderr.isatty())


class _NullBar:
    def advance(self, n: int = 1, **fields) -> None:
        pass

    def update(self, **fields) -> None:
        pass


class _RichBar:
    def __init__(self, progress, task):
        self._p, self._t = progress, task

    def advance(self, n: int = 1, **fields) -> None:
        self._p.update(self._t, advance=n, **fields)

    def update(self, **fields) -> None:
        self._p.update(self._t, **fields)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None):
    """Yield an object with ``advance(n, **fields)``; a rich bar when enabled."""
    if not progress_enabled():
        yield _NullBar()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    )
    with progress:
        task = progress.add_task(description, total=total, info="")
        yield _RichBar(progress, task)
