"""Components chosen by name: a built-in's name, or ``module:attr`` naming the user's own.

Agents (``agent.algo``), teachers (``teacher.kind``), query strategies (``query.strategy``)
and scoring functions (``teacher.score``) are all looked up here, so a typo gets the same
one line everywhere: the key, the known names, and what a ``module:attr`` must name.

>>> lookup("b", {"a": 1, "b": 2}, "key", "a thing")
2
>>> lookup("c", {"a": 1, "b": 2}, "key", "a thing")
Traceback (most recent call last):
...
rlhf.errors.ConfigError: key: 'c' is not one of a, b, nor a 'module:attr' naming a thing
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Mapping
from typing import Any, TypeVar

from rlhf.errors import ConfigError

T = TypeVar("T")


def lookup(name: str, builtins: Mapping[str, T], key: str, what: str) -> T | Any:
    """The built-in called ``name``, or the attribute ``module:attr`` names (imported with
    the current directory on the path). The caller checks that what it got is ``what``."""
    if name in builtins:
        return builtins[name]
    if ":" not in name:
        known = f"one of {', '.join(builtins)}, nor " if builtins else ""
        raise ConfigError(f"{key}: {name!r} is not {known}a 'module:attr' naming {what}")
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key}: {name!r} is not 'module:attr'; write e.g. "
                          f"'my_module:my_name' for {what}")
    module = import_user_module(module_name, key)
    if not hasattr(module, attr):
        raise ConfigError(f"{key}: module {module_name!r} has no attribute {attr!r} "
                          f"(it should name {what})")
    return getattr(module, attr)


def make(factory: Any, key: str, name: str, *args: Any) -> Any:
    """``factory(*args)`` for the component ``key: name``; an exception in the user's code
    becomes one ConfigError line saying where it was raised."""
    try:
        return factory(*args)
    except Exception as e:
        raise ConfigError(f"{key}: making {name!r} raised {describe_exception(e)}") from None


def import_user_module(name: str, key: str) -> Any:
    """Import a module named in the config (``key`` names the config key for errors).

    The current directory goes on ``sys.path`` (last, so it cannot shadow installed
    packages), as ``python -m`` would put it: the ``rlhf`` console script does not, and
    ``my_env:MyEnv`` for a ``my_env.py`` beside the config is the first thing a user tries.
    Any exception while importing becomes one line naming the module, the error and where
    it was raised.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise ConfigError(f"{key}: no module named {name!r}: install the package that "
                              "provides it (pip install -e .), or run from the directory "
                              "that contains it") from None
        raise ConfigError(f"{key}: importing {name!r} failed: it needs module {e.name!r}, "
                          "which is not installed") from None
    except Exception as e:  # the user's module itself is broken; say where
        raise ConfigError(f"{key}: importing {name!r} raised {describe_exception(e)}") from None


def describe_exception(e: BaseException) -> str:
    """``TypeName: message (at file.py:42)`` for the innermost frame of ``e``'s traceback."""
    frames = traceback.extract_tb(e.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {message}{where}" if message else f"{type(e).__name__}{where}"
