"""The ``shardlearn`` command: ``demo``, ``train``, ``predict``, ``bench``, ``info``.

Each command lives in its own module; heavy imports happen inside the commands so
``shardlearn --help`` stays fast. Bad input ends with ``Error: ...`` and a non-zero
exit status before any worker starts.
"""

from __future__ import annotations

import click

from .._version import __version__
from .bench import bench
from .demo import demo
from .info import info
from .predict import predict
from .train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shardlearn")
def main():
    """shardlearn: train models on a coordinator and a group of workers.

    Data is split into shards held by the workers; the same code runs on
    in-process workers (--engine local) or on Ray (--engine ray).
    """


main.add_command(demo)
main.add_command(train)
main.add_command(predict)
main.add_command(bench)
main.add_command(info)

__all__ = ["main"]
