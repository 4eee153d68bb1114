"""The environment a bridged child process starts with: an allow list copied from ours, plus explicit values.

Nothing from DataPulse's own environment reaches the child unless its name is allowed, so secrets
such as ``DATAPULSE_TOKEN`` or cloud credentials do not leak by default. Values given explicitly
(``--env NAME=VALUE`` or ``env = {...}`` in the bridge file) are added on top.

The SDK's `mcp.client.stdio.stdio_client` then merges its own small safe set *under* the mapping
built here: ``mcp.client.stdio.get_default_environment()`` copies HOME, LOGNAME, PATH, SHELL, TERM
and USER from the parent (skipping values that start with ``()``, i.e. exported shell functions).
Those six therefore reach the child even when they are left out of the allow list; to change one,
set it explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Final

from datapulse.config import ConfigurationError

__all__ = ["DEFAULT_ENV_ALLOW", "ENV_NAME", "child_environment", "parse_env_assignments"]

DEFAULT_ENV_ALLOW: Final = ("HOME", "LANG", "LC_ALL", "LOGNAME", "PATH", "SHELL", "TERM", "TMPDIR", "USER")
"""Variables a child inherits when no allow list is configured: enough to find and run programs."""

ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A portable environment variable name (use with ``fullmatch``)."""


def parse_env_assignments(items: Sequence[str]) -> dict[str, str]:
    """``["NAME=VALUE", ...]`` (repeated ``--env`` options) as a mapping, later items winning.

    VALUE is everything after the first ``=``: it may contain ``=`` and may be empty. NAME must match
    ``[A-Za-z_][A-Za-z0-9_]*``.

    Raises:
        ConfigurationError: an item without ``=`` or with an invalid NAME; the message quotes the item
            (with its value elided, since values are often secrets).
    """
    result: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals:
            raise ConfigurationError(f"--env {item!r}: expected NAME=VALUE")
        if not ENV_NAME.fullmatch(name):
            raise ConfigurationError(
                f"--env '{name}=...': expected NAME=VALUE with NAME made of letters, digits and '_', "
                "not starting with a digit"
            )
        result[name] = value
    return result


def child_environment(allow: Sequence[str], extra: Mapping[str, str], source: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: variables of ``source`` named by ``allow``, then ``extra`` on top.

    ``allow`` holds exact names (``"PATH"``) or case-sensitive `fnmatch` globs (``"AWS_*"``); a name
    absent from ``source`` is simply skipped. Values in ``source`` starting with ``()`` (exported shell
    functions) are never copied, as in the SDK. ``extra`` is copied as given, overriding ``source``.
    Nothing else from ``source`` is ever included. ``source`` is usually ``os.environ``; this function
    reads only its arguments.
    """
    result = {
        name: value
        for name, value in source.items()
        if not value.startswith("()") and any(fnmatchcase(name, pattern) for pattern in allow)
    }
    result.update(extra)
    return result
