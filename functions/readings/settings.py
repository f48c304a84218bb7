"""The settings the functions and the worker read from their environment: one set of rules and messages.

Each raises ValueError naming the variable and what to set it to, so that a misconfigured deployment fails
at start, saying why.
"""

from __future__ import annotations

from collections.abc import Mapping


def required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ValueError(f"environment variable {name} is required")
    return value


def positive_int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    """A whole number above 0; required unless there is a `default`."""
    value = env.get(name, "")
    if not value:
        if default is None:
            raise ValueError(f"environment variable {name} is required")
        return default
    if not (value.isascii() and value.isdigit() and int(value) > 0):
        raise ValueError(f"{name} is {value!r}; set it to a positive whole number")
    return int(value)


def port(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "")
    if not value:
        return default
    if not (value.isascii() and value.isdigit() and 0 < int(value) < 65536):
        raise ValueError(f"{name} is {value!r}; set it to a port number")
    return int(value)


def boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").lower()
    if not value:
        return default
    if value not in ("true", "false"):
        raise ValueError(f"{name} is {env[name]!r}; set it to true or false")
    return value == "true"
