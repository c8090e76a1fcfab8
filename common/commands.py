"""What every command body shares: a one-line refusal (exit 2) and the guard that turns a stage's expected errors
into one; command bodies live with the stage that owns them, `cli.py` only parses and delegates."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer

T = TypeVar("T")
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
EXIT_INTERRUPTED = 130
"""128 + SIGINT, what a shell reports for a command stopped by Ctrl-C."""


def fail(msg: str) -> NoReturn:
    """Print a one-line error on stderr and exit with the refused status."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_REFUSED)


def guarded(errors: tuple[type[BaseException], ...], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn`; the expected error types become one-line errors (exit 2) instead of tracebacks."""
    try:
        return fn(*args, **kwargs)
    except errors as e:
        fail(e.args[0] if isinstance(e, KeyError) and e.args else str(e))


def interrupted(what: str) -> int:
    """Print the one line of a command stopped by SIGINT (Ctrl-C) on stderr; the exit status 130.

    When a KeyboardInterrupt has passed through a string `exec` (dataclasses and namedtuples build their methods that
    way, so any lazy import the interrupt lands in), CPython keeps a process-wide "unhandled KeyboardInterrupt" mark,
    and `python -m affcli` then ends by SIGINT at exit (status -2) although the command handled it. Evaluating a
    string clears the mark (CPython's `run_eval_code_obj` resets it first), so the handled interrupt exits 130."""
    typer.secho(f"interrupted: {' '.join(what.split())}", fg=typer.colors.YELLOW, err=True)
    exec("None")  # noqa: S102 - a constant string: clears CPython's unhandled-KeyboardInterrupt mark (see above)
    return EXIT_INTERRUPTED
