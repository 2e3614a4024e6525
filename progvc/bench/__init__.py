"""Benchmarks: ``python -m progvc.bench NAME [args]`` runs ``progvc.bench.NAME.main(args)``.

Every module of this package with a ``main(argv: list[str]) -> int`` is a benchmark; its module
docstring's first line is its description in ``python -m progvc.bench --help``.
"""
