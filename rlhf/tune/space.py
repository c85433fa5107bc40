"""The parameter space of a tuning run: named parameters with bounds, an optional log
scale and optional whole numbers, mapped to and from the unit cube the GP works in.

>>> from rlhf.config import ParamConfig
>>> space = Space([ParamConfig("gain", 0.1, 10.0, log=True), ParamConfig("steps", 1, 5,
...                integer=True)])
>>> space.from_unit(np.array([[0.5, 0.5]]))
array([[1., 3.]])
>>> space.as_dict(np.array([1.0, 3.0]))
{'gain': 1.0, 'steps': 3}
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from rlhf.config import ParamConfig, TuneConfig
from rlhf.errors import ConfigError

MAX_PARAMS = 20
"""Preferential BO with a GP is for a handful of parameters; past this, use an RL agent."""
SNAP_DIGITS = 6
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validate_tune(tune: TuneConfig) -> None:
    """The ``tune`` section's checks beyond types and ranges; ConfigError naming the key."""
    if not tune.params:
        raise ConfigError("tune.params: a tuning config needs at least one parameter, e.g. "
                          "[{name: gain, low: 0.1, high: 10}]")
    if len(tune.params) > MAX_PARAMS:
        raise ConfigError(f"tune.params: {len(tune.params)} parameters; preferential BO is "
                          f"for a handful (at most {MAX_PARAMS}): tune fewer, or train an agent")
    seen: set[str] = set()
    for i, p in enumerate(tune.params):
        key = f"tune.params[{i}]"
        if not _NAME.fullmatch(p.name):
            raise ConfigError(f"{key}.name: {p.name!r} is not a name (letters, digits, _)")
        if p.name in seen:
            raise ConfigError(f"{key}.name: {p.name!r} is given twice")
        seen.add(p.name)
        if not (math.isfinite(p.low) and math.isfinite(p.high)):
            raise ConfigError(f"{key} ({p.name}): low and high must be finite numbers")
        if not p.low < p.high:
            raise ConfigError(f"{key} ({p.name}): low ({p.low:g}) must be below high "
                              f"({p.high:g})")
        if p.log and p.low <= 0:
            raise ConfigError(f"{key} ({p.name}): a log-scale parameter needs low > 0, got "
                              f"{p.low:g}")
        if p.integer and not (float(p.low).is_integer() and float(p.high).is_integer()):
            raise ConfigError(f"{key} ({p.name}): an integer parameter needs whole-number "
                              f"bounds, got {p.low:g}..{p.high:g}")
    if ":" not in tune.strategy:  # a built-in name is known now; module:attr at run start
        from rlhf.tune.pairs import make_pair_strategy

        make_pair_strategy(tune.strategy)
    if ":" not in tune.behaviour:
        raise ConfigError(f"tune.behaviour: {tune.behaviour!r} must be 'module:attr' naming "
                          "a callable params -> policy, e.g. rlhf_envs.tune_reach2d:controller")


class Space:
    """Maps parameter vectors (N, d) in the user's units to the unit cube (N, d) and back.

    Log-scale parameters are uniform in log space on the cube; integer parameters are
    rounded on the way back (their cube cell is [k - 0.5, k + 0.5] scaled), so every
    integer in [low, high] gets an equal share of the cube.
    """

    def __init__(self, params: Sequence[ParamConfig]):
        self.params = list(params)
        self.names = [p.name for p in self.params]
        self.dim = len(self.params)
        lo, hi = [], []
        for p in self.params:
            a, b = float(p.low), float(p.high)
            if p.integer:
                a, b = a - 0.5, b + 0.5
            if p.log:
                a, b = math.log(max(a, p.low * 0.5) if p.integer else a), math.log(b)
            lo.append(a)
            hi.append(b)
        self._lo, self._hi = np.array(lo), np.array(hi)
        self._log = np.array([p.log for p in self.params])
        self._int = np.array([p.integer for p in self.params])

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """(N, d) in [0, 1] -> (N, d) parameters in their units (bounds, log, integers)."""
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        z = self._lo + u * (self._hi - self._lo)
        x = np.where(self._log, np.exp(z), z)
        low = np.array([p.low for p in self.params])
        high = np.array([p.high for p in self.params])
        return np.clip(np.where(self._int, np.floor(x + 0.5), x), low, high)

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """(N, d) parameters -> (N, d) their place in the unit cube (inverse of ``from_unit``
        up to integer rounding)."""
        x = np.asarray(x, dtype=np.float64)
        z = np.where(self._log, np.log(np.maximum(x, 1e-300)), x)
        return np.clip((z - self._lo) / (self._hi - self._lo), 0.0, 1.0)

    def snap(self, u: np.ndarray) -> np.ndarray:
        """(N, d) cube points moved to where their parameters map back to (integers at
        their cell's centre), so equal parameters are one point to the GP; rounded to
        ``SNAP_DIGITS`` decimals, so that the last bits of an optimiser's answer (which the
        order of a threaded sum can change) do not make a rerun with the same seed ask a
        different pair."""
        return np.round(self.to_unit(self.from_unit(u)), SNAP_DIGITS)

    def as_dict(self, x: np.ndarray) -> dict[str, float | int]:
        """One parameter vector (d,) by name; integers as int."""
        return {p.name: int(v) if p.integer else float(v)
                for p, v in zip(self.params, np.asarray(x).reshape(-1), strict=True)}
