"""Pieces shared by the commands: the model registry, ``--param`` and ``--storage-option``
parsing, error handling, output."""

from __future__ import annotations

import ast
import contextlib
import sys

import click

#: Command-line model name -> (module, class name, task).
MODELS = {
    "logistic": ("shardlearn.linear_model", "LogisticRegression", "classification"),
    "linear-svc": ("shardlearn.linear_model", "LinearSVC", "classification"),
    "ridge": ("shardlearn.linear_model", "Ridge", "regression"),
    "linear": ("shardlearn.linear_model", "LinearRegression", "regression"),
    "tree": ("shardlearn.tree", "DecisionTreeClassifier", "classification"),
    "tree-regressor": ("shardlearn.tree", "DecisionTreeRegressor", "regression"),
    "forest": ("shardlearn.ensemble", "RandomForestClassifier", "classification"),
    "forest-regressor": ("shardlearn.ensemble", "RandomForestRegressor", "regression"),
    "boosting": ("shardlearn.ensemble", "GradientBoostingClassifier", "classification"),
    "boosting-regressor": ("shardlearn.ensemble", "GradientBoostingRegressor", "regression"),
}

ENGINES = ("local", "ray")


def model_class(name: str):
    import importlib

    module, cls, _ = MODELS[name]
    return getattr(importlib.import_module(module), cls)


def parse_value(text: str):
    """``--param`` values: Python/JSON literals (``0.5``, ``true``, ``None``, ``{0: 2}``), else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text


def build_estimator(model: str, params: tuple[str, ...]):
    """Instantiate the model with ``key=value`` params and validate them (no workers involved)."""
    from sklearn.utils._param_validation import InvalidParameterError

    cls = model_class(model)
    valid = sorted(cls().get_params(deep=False))
    kwargs = {}
    for item in params:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.UsageError(
                f"--param {item!r} is not KEY=VALUE; e.g. --param C=0.5. "
                f"Parameters of {cls.__name__}: {', '.join(valid)}."
            )
        if key not in valid:
            raise click.UsageError(
                f"--param {key}: {cls.__name__} has no parameter {key!r}; "
                f"its parameters are: {', '.join(valid)}."
            )
        if key in kwargs:
            raise click.UsageError(f"--param {key} is given twice.")
        kwargs[key] = parse_value(value)
    est = cls(**kwargs)
    try:
        est._validate_params()
    except InvalidParameterError as exc:
        raise click.UsageError(f"--param: {exc}") from None
    return est


def console(stderr: bool = False):
    """A rich console; wide when not a terminal so tables are never cut."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 140, highlight=False)


@contextlib.contextmanager
def user_errors():
    """Turn errors caused by the user's input into a clean ``Error: ...`` and exit status 1."""
    from ..runtime.errors import ShardlearnRuntimeError

    try:
        yield
    except click.ClickException:
        raise
    except (ValueError, OSError, ShardlearnRuntimeError) as exc:
        raise click.ClickException(cli_message(exc)) from exc


def cli_message(exc: BaseException) -> str:
    """The error's text, with the command-line spelling of options the library names."""
    text = (str(exc) or type(exc).__name__).replace(
        "Name the label column with label=...", "Name the label column with --label COL.")
    if "storage_options" in text:
        text += (" (On the command line, give storage options as --storage-option NAME=VALUE, "
                 "e.g. --storage-option endpoint_url=http://host:9000 --storage-option key=KEY "
                 "--storage-option secret=SECRET.)")
    return text


def parse_storage_options(pairs: tuple[str, ...]) -> dict | None:
    """``--storage-option KEY=VALUE`` (repeatable) as a storage_options dict (None when none given)."""
    from ..io.storage import parse_storage_options as parse

    if not pairs:
        return None
    try:
        return parse(pairs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--storage-option") from None


def start_session(engine: str, workers: int | None, address: str | None = None):
    import shardlearn

    kwargs = {"address": address} if address else {}
    return shardlearn.init(engine, n_workers=workers, **kwargs)


def configure_progress(progress: bool | None) -> None:
    """``--progress/--no-progress``; by default bars show when stderr is a terminal."""
    import shardlearn

    if progress is not None:
        shardlearn.set_progress("always" if progress else "never")


engine_option = click.option(
    "--engine", type=click.Choice(ENGINES), default="local", show_default=True,
    help="local: worker threads in this process. ray: one Ray actor per worker.",
)
workers_option = click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="Number of workers (default: one per CPU).",
)
address_option = click.option(
    "--address", default=None,
    help="Ray only: join an existing cluster (e.g. 'auto' or 'ray://head:10001') "
         "instead of starting a local one.",
)
storage_option = click.option(
    "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
    help="File-system option for the storage URLs (repeatable), e.g. "
         "endpoint_url=http://minio:9000, key=..., secret=..., "
         "client_kwargs.region_name=eu-west-1 (dotted keys nest). Default: the standard "
         "environment (AWS_*, ~/.aws, ...).",
)
progress_option = click.option(
    "--progress/--no-progress", default=None,
    help="Show progress bars (default: when stderr is a terminal).",
)
