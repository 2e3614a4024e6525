"""``python -m progvc.bench NAME [args]``: dispatch to the benchmark module ``progvc.bench.NAME``."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

from progvc.errors import ProgvcError

_PACKAGE = "progvc.bench"


def benchmarks() -> dict[str, str]:
    """``{name: first line of its docstring}`` of every benchmark module, read without importing it."""
    package_dir = Path(importlib.util.find_spec(_PACKAGE).origin).parent
    found = {}
    for info in sorted(pkgutil.iter_modules([str(package_dir)]), key=lambda m: m.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        tree = ast.parse((package_dir / f"{info.name}.py").read_text(encoding="utf-8"))
        if not any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            continue
        doc = (ast.get_docstring(tree) or "").strip().splitlines()
        found[info.name] = doc[0] if doc else ""
    return found


def _usage(known: dict[str, str]) -> str:
    width = max((len(n) for n in known), default=0)
    lines = [f"  {name:<{width}}  {doc}" for name, doc in known.items()]
    return "\n".join(
        [
            "usage: python -m progvc.bench NAME [args]   (python -m progvc.bench NAME --help for its options)",
            "",
            "benchmarks:",
            *lines,
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark named by ``argv[0]`` with the remaining arguments; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known = benchmarks()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(known))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in known:
        print(f"progvc.bench: error: unknown benchmark {name!r}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(f"{_PACKAGE}.{name}").main(rest) or 0)
    except ProgvcError as exc:
        print(f"progvc.bench {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
