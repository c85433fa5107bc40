"""An ensemble of small convolutional reward networks as one batched computation.

Same design as ``EnsembleMLP``: member weights are stacked on a leading axis (conv layer l
holds ``weight`` (M, out, in, k, k) and ``bias`` (M, out)), and one call evaluates every
member. The convolutions run as *grouped* convolutions: the M members' channels sit side by
side in one tensor and ``groups=M`` keeps them apart, so each layer is one conv call for the
whole ensemble. Inputs shared by all members skip even the M-fold copy: the first layer is an
ordinary convolution with the members' filters stacked as output channels. Why grouped
convolutions rather than ``torch.func.vmap`` or a loop over members: BENCHMARKS.md, "Custom
environments" (``python scripts/bench_envs.py cnn``).

The network reads the reward model's flat feature vector (D,) = [image pixels (already scaled
by 1/255, in the observation's own layout), next-observation pixels if used, action features],
reshapes the pixels to (C, H, W) (HWC observations are transposed here), runs the conv trunk,
and hands [conv features, action features] to an ``EnsembleMLP`` head.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rlhf.reward.network import LEAKY_SLOPE, EnsembleMLP

ConvLayer = tuple[int, int, int]
"""(out_channels, kernel, stride) of one convolution."""

NATURE_SMALL: tuple[ConvLayer, ...] = ((16, 8, 4), (32, 4, 2), (32, 3, 1))
"""The Atari (Nature DQN) trunk at half width: cheap enough to train on a CPU."""


def conv_out(size: int, layers: tuple[ConvLayer, ...] | list[ConvLayer]) -> int:
    """Spatial size after ``layers`` (no padding); < 1 means the image is too small."""
    for _, k, s in layers:
        size = (size - k) // s + 1 if size >= k else 0
    return size


def default_conv_layers(height: int, width: int) -> tuple[ConvLayer, ...]:
    """``NATURE_SMALL``, with trailing layers dropped until the image is big enough; 3x3
    stride-1 convolutions for images smaller than the first 8x8 kernel."""
    layers = list(NATURE_SMALL)
    while layers and conv_out(min(height, width), layers) < 1:
        layers.pop()
    if not layers:
        layers = [(16, 3, 1)] if min(height, width) >= 3 else [(16, 1, 1)]
    return tuple(layers)


class EnsembleCNN(nn.Module):
    """M independent ``conv trunk -> MLP head -> 1`` reward networks in one batched pass.

    Args:
        members: ensemble size M.
        image_shape: one observation image as stored, (H, W, C) or (C, H, W).
        channels_first: True when ``image_shape`` is (C, H, W).
        n_images: images per input (2 when the next observation is a feature too); they are
            stacked along the channel axis.
        extra_dim: trailing non-image features per input (e.g. one-hot actions).
        hidden: widths of the MLP head after the conv trunk.
        conv: (out_channels, kernel, stride) per conv layer; default from the image size.
        generator: RNG for the initialisation (``nn.Conv2d``'s uniform +-1/sqrt(fan_in)).
    """

    def __init__(self, members: int, image_shape: tuple[int, int, int], channels_first: bool,
                 n_images: int, extra_dim: int, hidden: list[int],
                 conv: tuple[ConvLayer, ...] | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"EnsembleCNN needs (H, W, C) or (C, H, W) images, got {image_shape}")
        if channels_first:
            c, h, w = image_shape
        else:
            h, w, c = image_shape
        self.members, self.image_shape = members, tuple(image_shape)
        self.channels_first, self.n_images, self.extra_dim = channels_first, n_images, extra_dim
        self.hidden = list(hidden)
        self.conv_layers = tuple(conv) if conv is not None else default_conv_layers(h, w)
        side_h, side_w = conv_out(h, self.conv_layers), conv_out(w, self.conv_layers)
        if side_h < 1 or side_w < 1:
            raise ValueError(f"conv layers {self.conv_layers} do not fit {h}x{w} images")
        self.chw = (c * n_images, h, w)
        self.pixels = n_images * c * h * w
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        in_ch = c * n_images
        for out_ch, k, _ in self.conv_layers:
            bound = 1.0 / math.sqrt(in_ch * k * k)
            wt = (torch.rand(members, out_ch, in_ch, k, k, generator=generator) * 2 - 1) * bound
            b = (torch.rand(members, out_ch, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(wt))
            self.biases.append(nn.Parameter(b))
            in_ch = out_ch
        self.conv_features = in_ch * side_h * side_w
        self.head = EnsembleMLP(members, self.conv_features + extra_dim, hidden,
                                generator=generator)

    @property
    def in_dim(self) -> int:
        return self.pixels + self.extra_dim

    def _images(self, x: torch.Tensor, groups: int) -> torch.Tensor:
        """Flat features (groups, N, D) -> images (N, groups * n_images * C, H, W), channels
        member-major, in channels-last memory layout.

        oneDNN's grouped convolutions run 2-3x faster on channels-last (NHWC) data. One
        permute-and-copy does the member interleaving, the image stacking and the layout at
        once; shared HWC inputs need no copy at all.
        """
        n = x.shape[-2]
        img = x[..., : self.pixels].reshape(groups, n, self.n_images, *self.image_shape)
        # -> (N, H, W, groups, images, C)
        img = img.permute(1, 4, 5, 0, 2, 3) if self.channels_first else img.permute(
            1, 3, 4, 0, 2, 5)
        c, h, w = self.chw
        return img.reshape(n, h, w, groups * c).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (M, N, D) per-member inputs, or (N, D) shared by all members. Returns (M, N)."""
        m = self.members
        shared = x.dim() == 2
        n = x.shape[-2]
        # Shared inputs: (N, C, H, W), and the first layer convolves them with all members'
        # filters at once. Per-member inputs: (N, M*C, H, W), member m's channels in group m.
        img = self._images(x, 1 if shared else m)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            stride = self.conv_layers[i][2]
            weight = w.reshape(-1, *w.shape[2:])  # (M*out, in, k, k)
            groups = 1 if (shared and i == 0) else m
            img = nn.functional.conv2d(img, weight, b.reshape(-1), stride=stride, groups=groups)
            img = nn.functional.leaky_relu(img, LEAKY_SLOPE)
        feats = img.reshape(n, m, -1).transpose(0, 1)  # (M, N, F)
        if self.extra_dim:
            extra = x[..., self.pixels:]
            if shared:
                extra = extra.unsqueeze(0).expand(m, -1, -1)
            feats = torch.cat([feats, extra], dim=-1)
        return self.head(feats)

    def l2(self) -> torch.Tensor:
        """(M,) sum of squared weights of each member (biases excluded)."""
        conv = sum(w.pow(2).sum(dim=(1, 2, 3, 4)) for w in self.weights)
        return conv + self.head.l2()

    def flops_per_input(self) -> int:
        """Forward multiply-adds x2 for one member on one input."""
        flops = 0
        in_ch, h, w = self.chw
        for out_ch, k, s in self.conv_layers:
            h, w = (h - k) // s + 1, (w - k) // s + 1
            flops += 2 * out_ch * h * w * in_ch * k * k
            in_ch = out_ch
        return flops + self.head.flops_per_input()
