"""Which of a bridged server's tools, resources and prompts DataPulse exposes: allow/deny globs, matched purely.

Globs use `fnmatch` syntax (``*``, ``?``, ``[seq]``) and are case-sensitive. An empty allow list allows
everything; a deny match always wins over an allow match. Tools and prompts are matched by name,
resources by URI (resource templates by their URI template). Example::

    NameFilter(allow=("get_*", "list_*"), deny=("get_secret",)).permits("get_issue")   # True
    NameFilter(allow=("get_*", "list_*"), deny=("get_secret",)).permits("get_secret")  # False
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from datapulse.auth.scopes import Kind
from datapulse.config import ConfigurationError

__all__ = ["BridgeFilters", "Kind", "NameFilter", "parse_patterns"]


@dataclass(frozen=True, slots=True)
class NameFilter:
    """Allow/deny globs for one kind of item. ``allow`` empty: everything not denied is permitted."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def permits(self, name: str) -> bool:
        """Whether ``name`` is exposed: it matches no ``deny`` glob and (``allow`` empty or) some ``allow`` glob."""
        if any(fnmatchcase(name, pattern) for pattern in self.deny):
            return False
        return not self.allow or any(fnmatchcase(name, pattern) for pattern in self.allow)

    @property
    def is_open(self) -> bool:
        """True when no glob is set at all, so every name is permitted without matching."""
        return not self.allow and not self.deny


@dataclass(frozen=True, slots=True)
class BridgeFilters:
    """One `NameFilter` per kind; the default permits everything."""

    tools: NameFilter = NameFilter()
    resources: NameFilter = NameFilter()
    prompts: NameFilter = NameFilter()

    def for_kind(self, kind: Kind) -> NameFilter:
        """The filter for ``kind`` ("tool", "resource" or "prompt").

        Raises:
            ValueError: ``kind`` is none of those (a programming error, not a configuration one).
        """
        if kind == "tool":
            return self.tools
        if kind == "resource":
            return self.resources
        if kind == "prompt":
            return self.prompts
        raise ValueError(f"unknown kind {kind!r}; expected 'tool', 'resource' or 'prompt'")

    def permits(self, kind: Kind, name: str) -> bool:
        """Whether the item is exposed. ``name``: a tool or prompt name, a resource URI or URI template."""
        return self.for_kind(kind).permits(name)

    @property
    def is_open(self) -> bool:
        """True when no kind has any glob, so nothing is ever filtered."""
        return self.tools.is_open and self.resources.is_open and self.prompts.is_open


def parse_patterns(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Globs from a comma-separated string (``"get_*, list_*"``) or a list of strings, in order.

    Each pattern is stripped of surrounding whitespace. In a string, empty pieces (``"a,,b"``, a trailing
    comma) are skipped; in a list each item is one pattern, taken whole (commas included). ``None`` and
    ``""`` give ``()``.

    Raises:
        ConfigurationError: a list item that is not a string or is empty after stripping, a pattern
            containing a control character (tab, newline, ...), or a value that is neither a string
            nor a list; the message names the pattern's position and text.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        patterns = [piece.strip() for piece in value.split(",") if piece.strip()]
    elif isinstance(value, Sequence):
        patterns = []
        for index, item in enumerate(value, start=1):
            if not isinstance(item, str):
                raise ConfigurationError(f"pattern {index} ({item!r}) must be a string")
            if not item.strip():
                raise ConfigurationError(f"pattern {index} is empty; remove it or give a glob such as 'get_*'")
            patterns.append(item.strip())
    else:
        raise ConfigurationError(
            f"expected a comma-separated string or a list of glob strings, got {type(value).__name__}"
        )
    for index, pattern in enumerate(patterns, start=1):
        if any(unicodedata.category(char) == "Cc" for char in pattern):
            raise ConfigurationError(f"pattern {index} ({pattern!r}) contains a control character")
    return tuple(patterns)
