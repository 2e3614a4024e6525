"""Registries for the three plug-in families, with entry-point discovery.

A registry maps a short name (``"msvq"``, ``"var"``, ``"range"``) to a class. Implementations
register with a decorator; third-party packages register through the entry-point group named
after the registry (``progvc.tokenizers``, ``progvc.context_models``, ``progvc.coders``), whose
value is ``"module:Class"``. Entry points are loaded lazily, on the first lookup or listing.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from progvc.errors import ProgvcError

T = TypeVar("T")


class RegistryError(ProgvcError, KeyError):
    """Unknown name or a name registered twice."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Configurable:
    """Mixin that records the arguments of the outermost ``__init__`` call in ``self.init_args``.

    A component is then saved as ``{"name": registry_name, "init_args": init_args}``
    (:meth:`Registry.config_of`) and rebuilt by :meth:`Registry.from_config`, without pickling
    and without importing arbitrary class paths from a file. ``init_args`` must therefore be
    plain data (numbers, strings, lists, dicts).
    """

    init_args: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self, *args: Any, **kw: Any) -> None:
            if "init_args" not in self.__dict__:
                bound = sig.bind(self, *args, **kw)
                bound.apply_defaults()
                recorded = dict(bound.arguments)
                recorded.pop(next(iter(sig.parameters)))  # self
                for name, param in sig.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD:
                        recorded.update(recorded.pop(name, {}))
                    elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                        recorded.pop(name, None)
                object.__setattr__(self, "init_args", recorded)
            init(self, *args, **kw)

        cls.__init__ = __init__  # type: ignore[method-assign]


class Registry(Generic[T]):
    """A name -> class mapping for one family of components.

    Args:
        family: human name of the family, used in messages (``"tokenizer"``).
        group: entry-point group scanned for third-party implementations.
        base: the abstract base every registered class must subclass.
    """

    def __init__(self, family: str, group: str, base: type[T]) -> None:
        self.family = family
        self.group = group
        self.base = base
        self._classes: dict[str, type[T]] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: ``@TOKENIZERS.register("msvq")``."""

        def deco(cls: type[T]) -> type[T]:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{cls!r} is not a subclass of {self.base.__name__}")
            old = self._classes.get(name)
            if old is not None and old is not cls:
                raise RegistryError(
                    f"{self.family} {name!r} is already registered by {old.__module__}.{old.__qualname__}"
                )
            self._classes[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls

        return deco

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            if ep.name in self._classes:
                continue
            try:
                cls = ep.load()
            except Exception as exc:  # a broken plug-in must not break the library
                import warnings

                warnings.warn(
                    f"progvc: could not load {self.family} plug-in {ep.name!r} ({ep.value}): {exc}",
                    stacklevel=2,
                )
                continue
            if getattr(cls, "registry_name", None) != ep.name or self._classes.get(ep.name) is not cls:
                self.register(ep.name)(cls)

    def get(self, name: str) -> type[T]:
        """The class registered under ``name``; a clear error lists the known names otherwise."""
        if name not in self._classes:
            self._load_entry_points()
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"unknown {self.family} {name!r}; known: {known}") from None

    def create(self, name: str, **kwargs) -> T:
        """Instantiate ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

    def config_of(self, obj: T) -> dict[str, Any]:
        """``{"name": ..., "init_args": ...}`` of a registered, :class:`Configurable` instance."""
        name = getattr(type(obj), "registry_name", "")
        if self._classes.get(name) is not type(obj):
            raise RegistryError(f"{type(obj).__qualname__} is not registered as a {self.family}")
        return {"name": name, "init_args": dict(getattr(obj, "init_args", {}))}

    def from_config(self, config: dict[str, Any]) -> T:
        """Inverse of :meth:`config_of`."""
        return self.create(config["name"], **config.get("init_args", {}))

    def names(self) -> list[str]:
        """Every registered name, sorted (entry points included)."""
        self._load_entry_points()
        return sorted(self._classes)

    def items(self) -> Iterator[tuple[str, type[T]]]:
        for name in self.names():
            yield name, self._classes[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"
