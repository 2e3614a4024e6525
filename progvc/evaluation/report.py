"""Output folders that are never overwritten by accident, and plain-text tables for the terminal."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from progvc.errors import ProgvcError


class OutputExistsError(ProgvcError, FileExistsError):
    """The output folder already holds results of an earlier run."""


def prepare_output_dir(out: str | Path, patterns: Sequence[str], force: bool = False) -> Path:
    """Create ``out`` if needed; refuse when it holds files matching ``patterns`` unless ``force``.

    Args:
        out: the output folder.
        patterns: glob patterns of the files a run writes (``"*.png"``, ``"results.json"``).
        force: allow overwriting those files.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    earlier = sorted({p.name for pattern in patterns for p in out.glob(pattern)}) if out.is_dir() else []
    if earlier and not force:
        shown = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        raise OutputExistsError(
            f"{out} already holds results ({shown}); pass --force to overwrite or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def format_value(value: object, digits: int = 4) -> str:
    """A table cell: floats with ``digits`` significant digits, NaN / None as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def format_table(
    rows: Sequence[Mapping], columns: Sequence[str], headers: Sequence[str] | None = None
) -> str:
    """Rows of dicts as an aligned text table (text left-aligned, numbers right-aligned)."""
    headers = list(headers or columns)
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row.get(c), int | float) or row.get(c) is None for row in rows) for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])
