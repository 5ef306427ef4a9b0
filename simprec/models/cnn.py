"""SmallCNN: a two-convolution network for the 8x8 digit images."""

from __future__ import annotations

from .. import nn
from ..formats import fp32

__all__ = ["SmallCNN"]


class SmallCNN(nn.Sequential):
    """`SmallCNN(in_channels=1, channels=(16, 32), classes=10, image_size=8, kernel_size=3)`.

    Conv(in->c1, k, pad k//2) -> ReLU -> MaxPool(2) -> Conv(c1->c2, k, pad k//2) -> ReLU ->
    Flatten -> Linear(c2 * (image_size//2)**2 -> classes). A Sequential (torch-style names
    "0.weight", "3.weight", "6.weight"). Input (N, in_channels, H, W); flat digits rows
    (N, 64) are reshaped to (N, 1, 8, 8).
    """

    def __init__(self, in_channels: int = 1, channels=(16, 32), classes: int = 10,
                 image_size: int = 8, kernel_size: int = 3, *, fmt=fp32, generator=None):
        c1, c2 = channels
        if image_size % 2:
            raise ValueError(f"SmallCNN: image_size must be even (one 2x2 pooling), "
                             f"got {image_size}")
        if kernel_size % 2 == 0:
            raise ValueError(f"SmallCNN: kernel_size must be odd ('same' padding), "
                             f"got {kernel_size}")
        gen = nn.init.get_generator(generator)
        pad = kernel_size // 2
        side = image_size // 2
        super().__init__(
            nn.Conv2d(in_channels, c1, kernel_size, padding=pad, fmt=fmt, generator=gen),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size, padding=pad, fmt=fmt, generator=gen),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * side * side, classes, fmt=fmt, generator=gen),
        )
        self.in_channels, self.image_size = in_channels, image_size

    def forward(self, x):
        if x.ndim == 2:
            x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        return super().forward(x)
