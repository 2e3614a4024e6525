"""``progvc fit | validate | test``: handed whole to Lightning's CLI (see :mod:`progvc.training.cli`)."""

from __future__ import annotations

from collections.abc import Sequence


def run_lightning(argv: Sequence[str]) -> int:
    """Run Lightning's CLI on ``argv`` (sub-command first); returns the exit code.

    Argument errors print Lightning's usage message and give exit code 2;
    :class:`~progvc.errors.ProgvcError` propagates to :func:`progvc.cli.main`, which prints one line.
    """
    from progvc.training.cli import ProgVCCLI

    try:
        ProgVCCLI(args=list(argv))
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        return 1
    return 0
