"""2-D U-Net (Ronneberger et al., 2015) for 4-class L3 segmentation."""

from __future__ import annotations

import torch
from torch import nn

from l3seg_lib.config import ModelConfig


def _norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer of ``kind`` (``batch``, ``instance``, ``group`` with up to 8 groups; otherwise none)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU; optional dropout."""

    def __init__(self, cin: int, cout: int, norm: str, dropout: float = 0.0):
        """Two 3x3 convolutions, each followed by normalisation and ReLU, then dropout when ``dropout`` > 0."""
        bias = norm == "none"
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net with ``depth`` down-sampling steps; widths ``base_width * 2**level``.

    Input (N, in_channels, H, W) with H and W divisible by ``2**depth``; output logits
    (N, n_classes, H, W).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 4, depth: int = 4, base_width: int = 8,
                 norm: str = "batch", dropout: float = 0.1):
        """Encoder of ``depth`` + 1 levels (widths doubling from ``base_width``), decoder with skip connections,
        and a 1x1 convolution head; convolutions Kaiming-initialised."""
        super().__init__()
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else widths[i - 1], widths[i], norm,
                      dropout if i == depth else 0.0)
            for i in range(depth + 1)
        )
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth))
        self.decoders = nn.ModuleList(
            ConvBlock(2 * widths[i], widths[i], norm, dropout / 2 if i > 0 else 0.0) for i in range(depth)
        )
        self.head = nn.Conv2d(widths[0], n_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, n_classes, H, W) of a batch (N, in_channels, H, W); H and W must be divisible by
        2**depth."""
        factor = 2**self.depth
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {factor} (2**depth)")
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for i in reversed(range(self.depth)):
            x = self.ups[i](x)
            x = self.decoders[i](torch.cat([x, skips[i]], dim=1))
        return self.head(x)


def build_model(cfg: ModelConfig, n_classes: int = 4) -> UNet:
    """The U-Net of ``cfg`` for one-channel input and ``n_classes`` output classes."""
    return UNet(1, n_classes, cfg.depth, cfg.base_width, cfg.norm, cfg.dropout)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
