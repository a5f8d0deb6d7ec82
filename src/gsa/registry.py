"""Name → object registries with one alias rule, shared by groups, presets, datasets and recipes.

Every lookup by name in ``gsa`` (:func:`gsa.groups.get`, :func:`gsa.models.create`,
:func:`gsa.data.get_dataset`, :func:`gsa.train.get_recipe`) goes through a :class:`Registry`, so
the same spellings work everywhere: names are case-insensitive, surrounding whitespace is ignored
and ``-``, ``_`` and spaces are dropped (``"Rot-MNIST"``, ``"rot_mnist"`` and ``"rotmnist"`` are
one name), and each registry may add documented aliases (``"R4"`` for ``"p4"``). An unknown name
raises one line listing the valid choices::

    unknown group 'q5'; expected one of: z2, p4, p8, p12, p16, mz2, p4m, p8m, p{n}, p{n}m, C{n}, D{n} (any n >= 1)

This module imports nothing from ``gsa`` (it is the bottom of the import layering).
"""

from __future__ import annotations

from typing import Generic, Iterable, Iterator, Mapping, MutableMapping, Optional, TypeVar

__all__ = ["Registry", "normalize"]

T = TypeVar("T")

_IGNORED = "-_ "


def normalize(name: str) -> str:
    """The lookup key of ``name``: lower case, stripped, without ``-``, ``_`` and spaces."""
    return "".join(ch for ch in name.strip().lower() if ch not in _IGNORED)


class Registry(Generic[T]):
    """Named objects of one ``kind`` (``"group"``, ``"preset"``, ...) looked up with :func:`normalize`.

    Args:
        kind: what the names name; used in error messages.
        items: an existing ``{name: object}`` dict to serve. It is used, not copied, so entries
            added to it later (``PRESETS["mine"] = cfg``) can be looked up too.
        aliases: ``{alias: name}`` of extra accepted spellings.
        error: exception class raised for unknown names (a ``ValueError`` subclass).
        prompt: the words before the list of choices in that error.
        extra: further accepted forms shown in the error but not registered (``"npz:PATH"``).
    """

    def __init__(
        self,
        kind: str,
        items: Optional[MutableMapping[str, T]] = None,
        *,
        aliases: Optional[Mapping[str, str]] = None,
        error: type[ValueError] = ValueError,
        prompt: str = "expected one of",
        extra: Iterable[str] = (),
    ) -> None:
        self.kind = kind
        self.items: MutableMapping[str, T] = {} if items is None else items
        self.aliases: dict[str, str] = {}
        self.error = error
        self.prompt = prompt
        self.extra = tuple(extra)
        keys = [normalize(n) for n in self.items]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{kind} names collide after normalisation: {', '.join(self.items)}")
        for alias, name in (aliases or {}).items():
            self.alias(alias, name)

    def register(self, name: str, obj: T, aliases: Iterable[str] = ()) -> T:
        """Add ``obj`` under ``name`` (and ``aliases``); a name or alias already taken is refused."""
        self._check_free(name)
        self.items[name] = obj
        for alias in aliases:
            self.alias(alias, name)
        return obj

    def alias(self, alias: str, name: str) -> None:
        """Accept ``alias`` as another spelling of the registered ``name``."""
        if name not in self.items:
            raise ValueError(f"cannot alias {alias!r} to {name!r}: no {self.kind} {name!r} is registered")
        self._check_free(alias)
        self.aliases[normalize(alias)] = name

    def _check_free(self, name: str) -> None:
        if normalize(name) in self._index():
            raise ValueError(f"{self.kind} {name!r} is already registered")

    def _index(self) -> dict[str, str]:
        """``{lookup key: registered name}`` for the names and aliases."""
        index = {normalize(n): n for n in self.items}
        index.update({a: n for a, n in self.aliases.items() if n in self.items})
        return index

    def canonical(self, name: str) -> str:
        """The registered name that ``name`` spells; raises :attr:`error` if there is none."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        found = self._index().get(normalize(name))
        if found is None:
            raise self.error(self.unknown(name))
        return found

    def get(self, name: str) -> T:
        """The object registered as ``name`` (any accepted spelling)."""
        return self.items[self.canonical(name)]

    def unknown(self, name: object) -> str:
        """The one-line message for an unknown ``name``, listing the valid choices."""
        return f"unknown {self.kind} {name!r}; {self.prompt}: {', '.join([*self.items, *self.extra])}"

    def names(self) -> list[str]:
        """The registered names, in registration order (aliases are not listed)."""
        return list(self.items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize(name) in self._index()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()!r})"
