"""The codec's model: a tokenizer and a context model that fit together, saved as one file.

A progvc model file is a ``torch.save`` of plain data only (loadable with ``weights_only=True``)::

    {"format": "progvc-model", "version": 1,
     "config": {"tokenizer": {"name", "init_args"}, "context_model": {...}, "coder": "range"},
     "state_dict": {"tokenizer.*": Tensor, "context_model.*": Tensor}}

:meth:`CodecModel.load` also reads Lightning checkpoints that carry
``checkpoint["progvc_model"] = {"tokenizer": cfg, "context_model": cfg}`` (the other weights of
the training module -- discriminator, perceptual nets -- are dropped), and
:meth:`CodecModel.from_recipe` builds a model from a YAML recipe's ``class_path`` entries.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from progvc.coders import CODERS, EntropyCoder
from progvc.context_models import CONTEXT_MODELS, ContextModel
from progvc.errors import ConfigError, ProgvcError, WeightsNotFoundError
from progvc.tokenizers import TOKENIZERS, Tokenizer

MODEL_FORMAT = "progvc-model"
MODEL_VERSION = 1
#: folder of the packaged models, trained by the maintainers (docs/model_card.md).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: names of the packaged models, each ``WEIGHTS_DIR / f"{name}.pt"``: ``default``, and ``fast``
#: (the same tokenizer, a context model of half the depth: faster coding for a little more rate).
BUNDLED_MODELS = ("default", "fast")
#: largest model file :meth:`CodecModel.load` reads (the default model is 11 MB).
MAX_MODEL_BYTES = 8 << 30
#: prefixes of the state-dict keys that belong to the codec (a checkpoint may hold more).
_PREFIXES = ("tokenizer.", "context_model.")


class ModelLoadError(ConfigError):
    """A model file, checkpoint or recipe that cannot be read or does not fit its config."""


def _import_components() -> None:
    """Import the built-in implementations so that they are registered."""
    import importlib

    for module in ("progvc.tokenizers", "progvc.context_models", "progvc.coders"):
        importlib.import_module(module)


class CodecModel(nn.Module):
    """A :class:`Tokenizer` and a :class:`ContextModel` over its tokens, the temporal prediction
    they were trained for, and the name of the entropy coder.

    Args:
        tokenizer: a registered tokenizer.
        context_model: a registered context model that accepts ``tokenizer.spec``.
        coder: name of the registered entropy coder used for new streams (``"range"`` or ``"rans"``).
        prediction: ``"intra"`` (every frame coded alone) or ``"loops"`` (per-prefix prediction
            loops, :mod:`progvc.codec.prediction`); part of the fingerprint.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        context_model: ContextModel,
        coder: str = "range",
        prediction: str = "intra",
    ) -> None:
        super().__init__()
        from progvc.codec.prediction import check_mode

        context_model.check_compatible(tokenizer.spec)
        CODERS.get(coder)  # fail now on an unknown name
        self.tokenizer = tokenizer
        self.context_model = context_model
        self.coder = coder
        self.prediction = check_mode(prediction)

    @property
    def config(self) -> dict[str, Any]:
        """``{"tokenizer": cfg, "context_model": cfg, "coder": name[, "prediction": mode]}`` (see :meth:`Registry.config_of`).

        ``prediction`` is left out for ``"intra"``, so models made before it existed keep their fingerprint.
        """
        config = {
            "tokenizer": TOKENIZERS.config_of(self.tokenizer),
            "context_model": CONTEXT_MODELS.config_of(self.context_model),
            "coder": self.coder,
        }
        if self.prediction != "intra":
            config["prediction"] = self.prediction
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CodecModel:
        """A randomly initialised model from :attr:`config` (load weights afterwards)."""
        _import_components()
        try:
            tokenizer = TOKENIZERS.from_config(config["tokenizer"])
            context_model = CONTEXT_MODELS.from_config(config["context_model"])
        except ProgvcError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ModelLoadError(f"malformed model config ({type(exc).__name__}: {first})") from None
        prediction = config.get("prediction", "intra")
        if prediction not in ("intra", "loops"):
            raise ModelLoadError(f"malformed model config (unknown prediction {prediction!r})")
        return cls(tokenizer, context_model, config.get("coder", "range"), prediction)

    def set_deadzone(self, deadzone: str | tuple[float, float]) -> None:
        """Set the encoder's dead zone ``(intra, predicted)`` in quantization steps, or ``"I,P"``.

        An encoder-only choice of scalar tokenizers (:mod:`progvc.tokenizers.mssq`): streams stay
        decodable by the same model. :class:`ConfigError` for other tokenizers or bad values.
        """
        setter = getattr(self.tokenizer, "set_deadzone", None)
        if setter is None:
            raise ConfigError(
                f"the {self.tokenizer.registry_name} tokenizer has no dead zone (scalar tokenizers do)"
            )
        if isinstance(deadzone, str):
            try:
                deadzone = tuple(float(v) for v in deadzone.split(","))  # type: ignore[assignment]
            except ValueError:
                deadzone = ()  # type: ignore[assignment]
        if len(deadzone) != 2:
            raise ConfigError(f"deadzone must be INTRA,PREDICTED (two numbers in [0, 1)), got {deadzone!r}")
        setter(*deadzone)

    def entropy_coder(self) -> EntropyCoder:
        """A fresh instance of the model's entropy coder."""
        return CODERS.create(self.coder)

    def fingerprint(self) -> bytes:
        """8 bytes identifying the tokenizer and context model: the first bytes of a SHA-256 of
        their config (canonical JSON) and of every parameter and buffer (name, dtype, shape,
        raw bytes, in name order). The coder is left out: a stream records its own coder; so are
        the tokenizer's encoder-only args (:attr:`Tokenizer.encoder_only_args`, e.g. a dead zone) and
        both components' late args at their neutral value (:attr:`Tokenizer.late_args`,
        :attr:`ContextModel.late_args`)."""
        digest = hashlib.sha256()
        config = {k: v for k, v in self.config.items() if k != "coder"}
        for part, skip in (("tokenizer", self.tokenizer.encoder_only_args), ("context_model", ())):
            late = getattr(self, part).late_args
            config[part] = {
                **config[part],
                "init_args": {
                    k: v
                    for k, v in config[part]["init_args"].items()
                    if k not in skip and not (k in late and v == late[k])
                },
            }
        digest.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.digest()[:8]

    def save(self, path: str | Path, half: bool = False) -> None:
        """Write a progvc model file; ``half=True`` stores floating weights as float16 (half the size)."""
        state = {
            k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
            for k, v in self.state_dict().items()
        }
        payload = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "config": self.config,
            "state_dict": state,
        }
        torch.save(payload, Path(path))

    @classmethod
    def load(cls, source: str | Path = "default", map_location: str | torch.device = "cpu") -> CodecModel:
        """A model from a progvc model file, a Lightning checkpoint with ``"progvc_model"``, or a packaged model's name.

        ``source`` may name a packaged model (:data:`BUNDLED_MODELS`: ``"default"`` or ``"fast"``).

        float16 weights are cast back to float32. Raises :class:`WeightsNotFoundError` when the
        file (or a packaged model) is missing, :class:`ModelLoadError` when it is not a
        model file or its weights do not fit its config.
        """
        bundled = str(source) in BUNDLED_MODELS
        path = WEIGHTS_DIR / f"{source}.pt" if bundled else Path(source)
        if path.is_dir():
            raise ModelLoadError(f"{path}: is a folder, not a model file")
        if not path.is_file():
            if bundled:
                raise WeightsNotFoundError(
                    f"the {source} model is not installed ({path}); pass a model file or checkpoint instead"
                )
            raise WeightsNotFoundError(f"{path}: no such model file")
        checkpoint = _torch_load(path, map_location)
        if not isinstance(checkpoint, dict):
            raise ModelLoadError(f"{path}: not a progvc model file or Lightning checkpoint")
        if checkpoint.get("format") == MODEL_FORMAT:
            if checkpoint.get("version") != MODEL_VERSION:
                raise ModelLoadError(
                    f"{path}: model file version {checkpoint.get('version')} is not supported "
                    f"(this progvc reads {MODEL_VERSION})"
                )
            config, state = checkpoint.get("config"), checkpoint.get("state_dict")
        elif "progvc_model" in checkpoint:
            config, state = checkpoint["progvc_model"], checkpoint.get("state_dict")
        else:
            raise ModelLoadError(
                f"{path}: neither a progvc model file nor a Lightning checkpoint with 'progvc_model'"
            )
        if not isinstance(config, dict) or not isinstance(state, dict):
            raise ModelLoadError(f"{path}: config or state_dict missing")
        model = cls.from_config(config)
        model.load_weights(state, source=str(path))
        return model

    @classmethod
    def from_recipe(
        cls, recipe: str | Path, weights: str | Path | None = None, coder: str = "range"
    ) -> CodecModel:
        """A model built from a YAML recipe's ``tokenizer`` and ``context_model`` entries.

        Each entry is ``{class_path: ..., init_args: {...}}`` (LightningCLI style, found at the
        top level, under ``model`` or under ``model.init_args``); ``class_path`` is a registered
        name (``msvq``) or the dotted path of a registered class, never imported from the file.
        ``weights`` (a model file, a Lightning checkpoint or a bare state dict) is loaded when given.
        """
        import yaml

        path = Path(recipe)
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ModelLoadError(f"{path}: cannot read recipe ({str(exc).splitlines()[0]})") from None
        _import_components()
        section = _find_components(doc)
        if section is None:
            raise ModelLoadError(f"{path}: recipe has no 'tokenizer' and 'context_model' entries")
        tokenizer_cfg = _registered(TOKENIZERS, section["tokenizer"], path)
        context_cfg = _registered(CONTEXT_MODELS, section["context_model"], path)
        try:
            spec = TOKENIZERS.from_config(tokenizer_cfg).spec
        except TypeError as exc:
            raise ModelLoadError(f"{path}: bad tokenizer init_args ({exc})") from None
        # as the training CLI links them: the context model's shape follows the tokenizer
        context_cfg["init_args"] = {**spec.context_args(), **context_cfg["init_args"]}
        config = {"tokenizer": tokenizer_cfg, "context_model": context_cfg, "coder": coder}
        config["prediction"] = section.get("prediction", "intra")
        model = cls.from_config(config)
        if weights is not None:
            wpath = Path(weights)
            if not wpath.is_file():
                raise WeightsNotFoundError(f"{wpath}: no such weights file")
            state = _torch_load(wpath, "cpu")
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]
            if not isinstance(state, dict):
                raise ModelLoadError(f"{wpath}: not a state dict, model file or checkpoint")
            model.load_weights(state, source=str(wpath))
        return model

    def load_weights(self, state: dict[str, Tensor], source: str = "weights") -> None:
        """Load the ``tokenizer.*`` and ``context_model.*`` entries of ``state`` (others are ignored), strictly."""
        own = self.state_dict()
        kept = {k: v for k, v in state.items() if k.startswith(_PREFIXES)}
        missing = sorted(set(own) - set(kept))
        unexpected = sorted(set(kept) - set(own))
        if missing or unexpected:
            raise ModelLoadError(
                f"{source}: weights do not fit the config "
                f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
            )
        for k, v in kept.items():
            if not isinstance(v, Tensor) or v.shape != own[k].shape:
                raise ModelLoadError(f"{source}: weight {k} has the wrong shape or type")
            if v.dtype == torch.float16 and own[k].dtype == torch.float32:
                kept[k] = v.float()
        self.load_state_dict(kept, strict=True)


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load(weights_only=True)`` of a file that is not too large and whose zip checksums hold."""
    import pickle
    import zipfile

    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelLoadError(
            f"{path}: {size / 2**30:.1f} GiB is over the {MAX_MODEL_BYTES / 2**30:.0f} GiB limit for a model file"
        )
    if size == 0:
        raise ModelLoadError(f"{path}: empty file, not a model file")
    with open(path, "rb") as fh:
        zip_magic = fh.read(4) == b"PK\x03\x04"
    if zip_magic and not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: truncated or corrupt model file (its zip directory is missing)")
    if zip_magic:  # torch's format: check every record's CRC, which torch.load does not
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise ModelLoadError(f"{path}: corrupt model file ({exc})") from None
        if bad is not None:
            raise ModelLoadError(f"{path}: corrupt model file (checksum mismatch in {bad})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only load failed" in text.lower():
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            detail = next((ln for ln in lines if "GLOBAL" in ln or ln.startswith("Unsupported")), lines[-1])
            raise ModelLoadError(
                f"{path}: refused by the safe loader (weights_only=True: {detail[:160]}); a model file holds "
                "tensors and plain data only, and loading anything else could run code"
            ) from None
        raise ModelLoadError(
            f"{path}: cannot load safely with weights_only=True ({_first_line(exc)})"
        ) from None
    except Exception as exc:  # the unpickler raises many types on foreign or corrupt files
        raise ModelLoadError(
            f"{path}: cannot load safely with weights_only=True ({_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _find_components(doc: Any) -> dict[str, Any] | None:
    """The mapping that holds both ``tokenizer`` and ``context_model`` (top, ``model`` or ``model.init_args``)."""
    candidates = [doc]
    if isinstance(doc, dict) and isinstance(doc.get("model"), dict):
        candidates += [doc["model"], doc["model"].get("init_args")]
    for c in candidates:
        if isinstance(c, dict) and "tokenizer" in c and "context_model" in c:
            return c
    return None


def _registered(registry, entry: Any, path: Path) -> dict[str, Any]:
    """``{class_path, init_args}`` -> ``{name, init_args}`` for a class registered in ``registry``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_path"), str):
        raise ModelLoadError(f"{path}: every component needs a 'class_path' and optional 'init_args'")
    class_path = entry["class_path"]
    module, _, qualname = class_path.rpartition(".")
    for name, cls in registry.items():
        # "msvq", "progvc.tokenizers.msvq.MSVQTokenizer", or a re-export such as "progvc.tokenizers.MSVQTokenizer"
        if class_path == name or (qualname == cls.__qualname__ and cls.__module__.startswith(module)):
            args = entry.get("init_args") or {}
            if not isinstance(args, dict):
                raise ModelLoadError(f"{path}: init_args of {class_path} must be a mapping")
            return {"name": name, "init_args": args}
    raise ModelLoadError(f"{path}: {class_path} is not a registered {registry.family}")


def packaged_model(fingerprint: bytes) -> tuple[str, CodecModel] | None:
    """The packaged model (:data:`BUNDLED_MODELS`) whose fingerprint this is, as ``(name, model)``, or ``None``.

    Loads installed packaged models (a few MB each) until one matches: once per stream, not per frame.
    """
    for name in BUNDLED_MODELS:
        if (WEIGHTS_DIR / f"{name}.pt").is_file():
            model = CodecModel.load(name)
            if model.fingerprint() == fingerprint:
                return name, model
    return None
