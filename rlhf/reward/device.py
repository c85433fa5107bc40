"""Where the reward model runs and in which precision: ``reward.device`` and
``reward.precision`` resolved against this machine (CUDA, the CPU's bf16 support)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from rlhf.config import ConfigError


def pick_device(name: str) -> torch.device:
    """``reward.device`` as a torch device; a GPU this machine lacks is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"reward.device: {name!r} is not a device torch knows ({e}); use "
                          "'auto', 'cpu' or 'cuda[:N]'") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"reward.device: {name!r}, but this machine has no CUDA GPU "
                              f"that torch {torch.__version__} can use; use reward.device=cpu "
                              "(or auto)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"reward.device: {name!r}, but this machine has {count} CUDA "
                              f"GPU(s) (cuda:0..cuda:{count - 1})")
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): there bf16
    matmuls run at about twice the fp32 rate; elsewhere they are emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str, device: torch.device) -> bool:
    """'auto': bf16 autocast on CUDA and on CPUs with native bf16; fp32 elsewhere."""
    if precision == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    return precision == "bf16"
