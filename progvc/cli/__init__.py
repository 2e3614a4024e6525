"""The ``progvc`` command line: thin argument parsing over the library.

Sub-commands live beside this file, one module per floor they call into:
``codec_cmds`` (compress, decompress, truncate, info), ``eval_cmds`` (demo, evaluate),
``train_cmds`` (fit, validate, test: Lightning's CLI), ``data_cmds`` (data pack). Every
:class:`~progvc.errors.ProgvcError` ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from progvc.errors import ProgvcError

#: modules whose ``add_parsers(subparsers)`` registers sub-commands, in help order.
_COMMAND_MODULES = ("progvc.cli.codec_cmds", "progvc.cli.eval_cmds", "progvc.cli.data_cmds")
#: sub-commands handed whole to Lightning's CLI (which parses its own arguments).
LIGHTNING_COMMANDS = ("fit", "validate", "test")


def _cmd_list(args: argparse.Namespace) -> int:
    from progvc.coders import CODERS
    from progvc.context_models import CONTEXT_MODELS
    from progvc.tokenizers import TOKENIZERS

    for registry in (TOKENIZERS, CONTEXT_MODELS, CODERS):
        print(f"{registry.family}s ({registry.group}):")
        for name, cls in registry.items():
            doc = (cls.__doc__ or "").strip().splitlines()
            print(f"  {name:<12} {cls.__module__}.{cls.__qualname__}" + (f"  - {doc[0]}" if doc else ""))
    from progvc.codec.model import BUNDLED_MODELS, WEIGHTS_DIR, CodecModel

    print("packaged models (--model NAME; docs/model_card.md):")
    for name in BUNDLED_MODELS:
        path = WEIGHTS_DIR / f"{name}.pt"
        if not path.is_file():
            print(f"  {name:<12} not installed ({path})")
            continue
        model = CodecModel.load(name)
        parts = [f"{c['name']}({', '.join(f'{k}={v}' for k, v in c['init_args'].items() if k in _SHOWN)})"
                 for c in (model.config["tokenizer"], model.config["context_model"])]
        print(f"  {name:<12} fingerprint {model.fingerprint().hex()}, {path.stat().st_size / 1e6:.1f} MB: "
              + " + ".join(parts))
    return 0


#: the settings ``progvc list`` shows of a packaged model's components
_SHOWN = ("levels", "downsample", "latent_dim", "width", "depth")


def build_parser() -> argparse.ArgumentParser:
    from progvc import __version__

    parser = argparse.ArgumentParser(
        prog="progvc",
        description="Progressive generative video compression. "
        f"Training: progvc {{{','.join(LIGHTNING_COMMANDS)}}} --config recipes/X.yaml (Lightning CLI).",
    )
    parser.add_argument("--version", action="version", version=f"progvc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "list", help="list every registered tokenizer, context model and entropy coder, and the packaged models"
    )
    p.set_defaults(func=_cmd_list)
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(
            name, help=f"Lightning '{name}' from a YAML recipe (see 'progvc {name} --help')", add_help=False
        )
    for module in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``progvc`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # a dependency (CompressAI) scripts functions with torch.jit at import, which torch now warns
    # about on every command; it is not the user's to act on
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            from progvc.cli.train_cmds import run_lightning

            return run_lightning(argv)
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except ProgvcError as exc:
        print(f"progvc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("progvc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`progvc info FILE | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail again
        return 141  # 128 + SIGPIPE, as a shell reports a writer killed by it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
