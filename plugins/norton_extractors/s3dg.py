"""S3D-G, the video tower of the MIL-NCE text-video model (Miech et al., CVPR 2020; S3D-G: Xie et al., ECCV 2018),
as trained on HowTo100M and released as ``s3d_howto100m.pth``.

The released network takes ``(N, 3, T, H, W)`` RGB clips in [0, 1] (no mean or std) and first folds every 2x2x2
block of pixels into channels ("space to depth", a TPU layout trick of the original), so T, H and W must be even.
Pooling layers copy TensorFlow's ``SAME`` padding: pad the far side by ``kernel - stride`` (the near side by the
floor half of it), then pool with ``ceil_mode``. The 512-d ``video_embedding`` is a linear map of the
spatio-temporal mean of the last inception block (1024 channels).

Parameter names follow the released state dict, so it loads as it is; its text tower (``text_module.*``) is not
built here and those entries are left unused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: inception blocks in order: input channels, then the widths of branch 0 (1x1), branch 1 (1x1 reduce, 3x3x3),
#: branch 2 (1x1 reduce, 3x3x3) and branch 3 (3x3x3 max pool, 1x1)
INCEPTION_WIDTHS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "mixed_3b": (192, 64, 96, 128, 16, 32, 32),
    "mixed_3c": (256, 128, 128, 192, 32, 96, 64),
    "mixed_4b": (480, 192, 96, 208, 16, 48, 64),
    "mixed_4c": (512, 160, 112, 224, 24, 64, 64),
    "mixed_4d": (512, 128, 128, 256, 24, 64, 64),
    "mixed_4e": (512, 112, 144, 288, 32, 64, 64),
    "mixed_4f": (528, 256, 160, 320, 32, 128, 128),
    "mixed_5b": (832, 256, 160, 320, 32, 128, 128),
    "mixed_5c": (832, 384, 192, 384, 48, 128, 128),
}
#: the TensorFlow-style max pools: (kernel, stride) as (t, h, w), and the block each one precedes
POOLS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "conv_2b": ((1, 3, 3), (1, 2, 2)),
    "mixed_3b": ((1, 3, 3), (1, 2, 2)),
    "mixed_4b": ((3, 3, 3), (2, 2, 2)),
    "mixed_5b": ((2, 2, 2), (2, 2, 2)),
}
EMBEDDING_WIDTH = 512


class ConvUnit(nn.Module):
    """Conv3d without bias, BatchNorm, ReLU; ``separable`` splits a k x k x k kernel into a 1 x k x k spatial
    convolution (``conv1``/``bn1``) followed by a k x 1 x 1 temporal one (``conv2``/``bn2``)."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int, int], padding: int | tuple[int, int, int] = 0,
                 separable: bool = False) -> None:
        super().__init__()
        self.separable = separable
        if separable:
            k = kernel if isinstance(kernel, int) else kernel[0]
            p = padding if isinstance(padding, int) else padding[0]
            self.conv1 = nn.Conv3d(cin, cout, (1, k, k), padding=(0, p, p), bias=False)
            self.bn1 = nn.BatchNorm3d(cout)
            self.conv2 = nn.Conv3d(cout, cout, (k, 1, 1), padding=(p, 0, 0), bias=False)
            self.bn2 = nn.BatchNorm3d(cout)
        else:
            self.conv1 = nn.Conv3d(cin, cout, kernel, padding=padding, bias=False)
            self.bn1 = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.separable:
            x = F.relu(self.bn2(self.conv2(x)))
        return x


class SelfGating(nn.Module):
    """S3D-G's feature gating: channels scaled by a sigmoid of a linear map of their spatio-temporal mean."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * gate[:, :, None, None, None]


class Inception(nn.Module):
    """Four gated branches concatenated on the channel axis."""

    def __init__(self, cin: int, b0: int, b1_reduce: int, b1: int, b2_reduce: int, b2: int, b3: int) -> None:
        super().__init__()
        self.conv_b0 = ConvUnit(cin, b0, 1)
        self.conv_b1_a = ConvUnit(cin, b1_reduce, 1)
        self.conv_b1_b = ConvUnit(b1_reduce, b1, 3, padding=1, separable=True)
        self.conv_b2_a = ConvUnit(cin, b2_reduce, 1)
        self.conv_b2_b = ConvUnit(b2_reduce, b2, 3, padding=1, separable=True)
        self.conv_b3_b = ConvUnit(cin, b3, 1)
        self.gating_b0, self.gating_b1 = SelfGating(b0), SelfGating(b1)
        self.gating_b2, self.gating_b3 = SelfGating(b2), SelfGating(b3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (
            self.gating_b0(self.conv_b0(x)),
            self.gating_b1(self.conv_b1_b(self.conv_b1_a(x))),
            self.gating_b2(self.conv_b2_b(self.conv_b2_a(x))),
            self.gating_b3(self.conv_b3_b(F.max_pool3d(x, 3, stride=1, padding=1))),
        )
        return torch.cat(branches, dim=1)


def same_max_pool(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """TensorFlow ``SAME`` max pooling as the released weights were trained with (zero padding: inputs are
    post-ReLU, so zeros never win over a real value)."""
    pads: list[int] = []
    for k, s in reversed(list(zip(kernel, stride, strict=True))):  # F.pad wants the last axis first
        total = max(k - s, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool3d(F.pad(x, pads), kernel, stride, ceil_mode=True)


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, T, H, W)`` -> ``(N, 8C, T/2, H/2, W/2)``; the new channel index is ``((dt*2 + dh)*2 + dw)*C + c``."""
    n, c, t, h, w = x.shape
    x = x.reshape(n, c, t // 2, 2, h // 2, 2, w // 2, 2)
    return x.permute(0, 3, 5, 7, 1, 2, 4, 6).reshape(n, 8 * c, t // 2, h // 2, w // 2)


class S3DG(nn.Module):
    """The S3D-G video tower: ``forward(clips (N, 3, T, H, W) in [0, 1]) -> (N, 512)`` video embeddings
    (not normalised); T, H and W even."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvUnit(24, 64, (2, 4, 4), padding=(1, 2, 2))
        self.conv_2b = ConvUnit(64, 64, 1)
        self.conv_2c = ConvUnit(64, 192, 3, padding=1, separable=True)
        self.gating = SelfGating(192)
        for name, widths in INCEPTION_WIDTHS.items():
            self.add_module(name, Inception(*widths))
        self.fc = nn.Linear(INCEPTION_WIDTHS["mixed_5c"][1] + INCEPTION_WIDTHS["mixed_5c"][3]
                            + INCEPTION_WIDTHS["mixed_5c"][5] + INCEPTION_WIDTHS["mixed_5c"][6], EMBEDDING_WIDTH)

    def trunk(self, clips: torch.Tensor) -> torch.Tensor:
        """The last inception block's output ``(N, 1024, T', H', W')``."""
        x = self.conv1(space_to_depth(clips))
        x = x[:, :, 1:, 1:, 1:]  # the padded even kernel leaves one extra step in front: SAME padding drops it
        x = self.conv_2c(self.conv_2b(same_max_pool(x, *POOLS["conv_2b"])))
        x = self.gating(x)
        for name in INCEPTION_WIDTHS:
            if name in POOLS:
                x = same_max_pool(x, *POOLS[name])
            x = getattr(self, name)(x)
        return x

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(clips).mean(dim=(2, 3, 4)))
