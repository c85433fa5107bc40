"""``ConfigError``, in a module of its own so that ``rlhf.config_yaml`` and
``rlhf.config_bounds`` can raise it without importing ``rlhf.config`` (which imports them);
``rlhf.config`` re-exports it, so ``from rlhf.config import ConfigError`` is the usual spelling.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A user error in a config file or override; the message names the key and the fix."""
