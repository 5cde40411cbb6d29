"""Running the ``shardlearn`` command line inside the test process.

A subprocess spends about 2.5 s importing scikit-learn, numba and pandas before it
reads an argument (measured on a 2-core VM); a test of a command that must fail
on bad input spends nothing else. :func:`run_cli_in_process` runs the same click
command in this process and answers like ``subprocess.run``; with
``forbid_workers`` it also proves the command failed before starting any worker.
Keep some real subprocess runs for the entry point itself.
"""

from __future__ import annotations

import contextlib
import subprocess
import traceback

#: Text put in stderr when a command tried to start workers under ``forbid_workers``.
WORKERS_STARTED = "shardlearn.testing: a command started workers"


@contextlib.contextmanager
def _no_workers():
    from ..runtime import session as session_module

    real = session_module.make_engine

    def refuse(*args, **kwargs):
        raise RuntimeError(WORKERS_STARTED)

    session_module.make_engine = refuse
    try:
        yield
    finally:
        session_module.make_engine = real


def run_cli_in_process(*args, env: dict | None = None,
                       forbid_workers: bool = False) -> subprocess.CompletedProcess:
    """``shardlearn ARGS`` run here, as ``subprocess.run(..., capture_output=True,
    text=True)`` would report it: ``returncode``, ``stdout``, ``stderr``.

    ``env``: variables to set for the run (None unsets one). An exception the
    command did not turn into an error message is appended to ``stderr`` as a
    traceback, as the interpreter would print it.
    """
    from click.testing import CliRunner

    from ..cli import main

    base = {"SHARDLEARN_PROGRESS": "never", "COLUMNS": "160"}
    runner = CliRunner()
    guard = _no_workers() if forbid_workers else contextlib.nullcontext()
    with guard:
        result = runner.invoke(main, [str(a) for a in args], env={**base, **(env or {})},
                               prog_name="shardlearn")
    stderr = result.stderr
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))
    return subprocess.CompletedProcess(["shardlearn", *map(str, args)], result.exit_code,
                                       result.stdout, stderr)
