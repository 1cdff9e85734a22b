"""Small argument checks shared by constructors: a bad value is a ``ConfigError`` naming who
rejected it, which option, the allowed values and what was given."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from wsol.errors import ConfigError

__all__ = ["check_choice"]


def check_choice(who: str, name: str, value: Any, choices: Collection[Any]) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{who}: {name} must be one of {tuple(choices)}, got {value!r}")
