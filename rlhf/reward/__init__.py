"""The reward model: batched ensemble network, features, Bradley-Terry trainer."""

from rlhf.reward.device import pick_device
from rlhf.reward.model import FeatureSpec, RewardModel, RewardModelError
from rlhf.reward.network import EnsembleMLP
from rlhf.reward.trainer import FitStats, RewardTrainer

__all__ = ["EnsembleMLP", "FeatureSpec", "FitStats", "RewardModel", "RewardModelError",
           "RewardTrainer", "pick_device"]
