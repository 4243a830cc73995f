"""Errors every layer of snnlib raises for input a user can fix, with a "did you mean" hint."""
from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """A config key or value that cannot be used."""


def suggest(name: str, choices) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``choices`` to ``name``, else ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""
