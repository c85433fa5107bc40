"""rlhf: reinforcement learning from human preferences (Christiano et al. 2017).

>>> from rlhf import load_config, run
>>> cfg = load_config("configs/smoke.yaml")        # doctest: +SKIP
>>> result = run(cfg)                               # doctest: +SKIP
"""

from rlhf.config import Config, ConfigError, load_config
from rlhf.loop import RunResult, run

__all__ = ["Config", "ConfigError", "RunResult", "load_config", "run"]
__version__ = "0.1.0"
