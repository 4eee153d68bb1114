"""Which scopes a tool, resource or prompt needs: the ``DATAPULSE_SCOPES`` policy, parsed once, matched purely.

Format: rules separated by ``;`` (or newlines), each ``KIND:GLOB=SCOPE [SCOPE ...]`` with KIND one of
``tool``, ``resource`` (matched against the URI, or the URI template of a template) and ``prompt``.
GLOB uses `fnmatch` syntax, case-sensitive. For each kind the first matching rule applies and all its
scopes are needed; an item matching no rule needs no scope. Example::

    tool:admin_*=admin;tool:fetch_url=net:read;resource:file:///secret/*=secret;prompt:*=prompts
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal, get_args

Kind = Literal["tool", "resource", "prompt"]
KINDS: tuple[Kind, ...] = get_args(Kind)


@dataclass(frozen=True, slots=True)
class ScopeRule:
    """Items of ``kind`` whose name matches ``pattern`` need every scope in ``scopes``."""

    kind: Kind
    pattern: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class ScopePolicy:
    """The parsed ``DATAPULSE_SCOPES`` (see the module docstring). Empty: nothing needs a scope."""

    rules: tuple[ScopeRule, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.rules)

    def required(self, kind: Kind, name: str) -> frozenset[str]:
        """The scopes the item ``name`` of ``kind`` needs (first matching rule; none: empty)."""
        for rule in self.rules:
            if rule.kind == kind and fnmatchcase(name, rule.pattern):
                return rule.scopes
        return frozenset()

    def all_scopes(self) -> Iterator[str]:
        """Every scope any rule names, in rule order, without repeats."""
        seen: set[str] = set()
        for rule in self.rules:
            for scope in sorted(rule.scopes):
                if scope not in seen:
                    seen.add(scope)
                    yield scope


def parse_scope_policy(spec: str | None) -> ScopePolicy:
    """Parse a ``DATAPULSE_SCOPES`` value.

    Raises:
        ValueError: a rule without ``KIND:``, an unknown kind, no ``=``, an empty glob, or no scope; the
            message names the rule's position and text.
    """
    if not spec:
        return ScopePolicy()
    rules: list[ScopeRule] = []
    for index, raw in enumerate(spec.replace("\n", ";").split(";"), start=1):
        text = raw.strip()
        if not text:
            continue
        kind, colon, rest = text.partition(":")
        kind = kind.strip()
        if not colon or kind not in KINDS:
            raise ValueError(f"scope rule {index} ({text!r}) must start with 'tool:', 'resource:' or 'prompt:'")
        pattern, equals, scope_text = rest.rpartition("=")
        pattern = pattern.strip()
        scopes = frozenset(scope_text.split())
        if not equals or not pattern:
            raise ValueError(f"scope rule {index} ({text!r}) must look like '{kind}:GLOB=SCOPE [SCOPE ...]'")
        if not scopes:
            raise ValueError(f"scope rule {index} ({text!r}) names no scope after '='")
        rules.append(ScopeRule(kind, pattern, scopes))  # kind was checked against KINDS
    return ScopePolicy(tuple(rules))
