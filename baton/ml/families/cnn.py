"""The small CNN family: input normalization, ``Conv -> ReLU -> MaxPool`` blocks, a global
average pool and a linear head, over flattened images; single worker or DDP only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from baton.errors import ModelError
from baton.ml.families.base import Family
from baton.ml.families.mlp import _int_list
from baton.ml.norm import InputNorm
from baton.ml.plans import PlanKind

_MAX_DIM = 65536
"""The largest ``height``, ``width`` or ``in_channels`` an argument may give."""


class CNN(nn.Module):
    """Normalizes the flattened pixels ``[n, C*H*W]``, reads them as ``[n, C, H, W]`` images
    and classifies them with ``Conv3x3 -> ReLU -> MaxPool2`` blocks, a global average pool
    and a linear head."""

    def __init__(
        self, *, image: tuple[int, int, int], channels: list[int], num_classes: int
    ) -> None:
        super().__init__()
        self.image = image  # (channels, height, width) of an input image
        self.input_norm = InputNorm(math.prod(image))
        layers: list[nn.Module] = []
        width = image[0]
        for c in channels:
            # ceil_mode keeps a 1x1 map 1x1, so any number of blocks fits any image.
            layers += [
                nn.Conv2d(width, c, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            width = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns class logits ``[n, num_classes]``."""
        images = self.input_norm(x).view(len(x), *self.image)
        features = self.body(images).mean(dim=(2, 3))
        out: torch.Tensor = self.head(features)
        return out


def _dim(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_DIM:
        raise ModelError(f"model argument {name!r} must be an integer in [1, {_MAX_DIM}]")
    return value


def _shape_args(args: Mapping[str, Any]) -> tuple[int, int | None, int | None]:
    """``in_channels`` (default 1), ``height`` and ``width`` (None when not given), checked."""
    c = _dim("in_channels", args.get("in_channels", 1)) or 1
    return c, _dim("height", args.get("height")), _dim("width", args.get("width"))


def image_shape(args: Mapping[str, Any], num_features: int) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the images a ``cnn`` with ``args`` reads from
    ``num_features`` inputs.

    ``in_channels`` defaults to 1; a missing ``height`` or ``width`` is what the inputs
    leave for it, and with neither the image is square.

    Raises:
        ModelError: An argument has the wrong type or value, or the inputs are not
            ``in_channels * height * width`` pixels.
    """
    c, height, width = _shape_args(args)
    pixels = num_features // c
    if height is None and width is None:
        h = w = math.isqrt(pixels)
    else:
        h = height or pixels // (width or 1)
        w = width or pixels // h if h else 0
    if c * h * w != num_features:
        seen = f"{c}x{h}x{w}" if h and w else f"{c}-channel"
        raise ModelError(
            f"model 'cnn' reads {seen} images (channels x height x width), which do not "
            f"make the task's {num_features} inputs; set 'in_channels', 'height' and 'width'"
        )
    return c, h, w


def _on_meta_device() -> bool:
    """Whether models are being built on the ``meta`` device: shapes only, as the check at
    submit builds them (:mod:`baton.ml.validate`), with placeholder input widths."""
    return torch.empty(()).device.type == "meta"


class CNNFamily(Family):
    """``cnn``: arguments ``channels`` (convolution widths, default ``[8, 16]``),
    ``in_channels`` (default 1), ``height`` and ``width`` (default: what the inputs leave;
    square with neither). Data parallel only (``single``, ``ddp``): no layer is split or
    cut."""

    name: ClassVar[str] = "cnn"
    args: ClassVar[tuple[str, ...]] = ("channels", "in_channels", "height", "width")
    model_type: ClassVar[type[nn.Module]] = CNN
    plans: ClassVar[frozenset[PlanKind]] = frozenset({PlanKind.SINGLE, PlanKind.DDP})

    def build(self, args: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
        """Builds a :class:`CNN`.

        The image shape is checked against ``num_features`` except on the ``meta``
        device, whose model never runs and whose input width is a placeholder: a site
        checks it against its task's inputs when it builds the model for a hop.
        """
        channels = _int_list("channels", args.get("channels", [8, 16]))
        in_channels, _, _ = _shape_args(args)
        image = (in_channels, 1, 1) if _on_meta_device() else image_shape(args, num_features)
        return CNN(image=image, channels=channels, num_classes=num_classes)

    def activation_bytes(
        self, model: nn.Module, *, batch: int, example_shape: tuple[int, ...]
    ) -> int:
        """Two float32 values per output of every convolution (before and after its ReLU)
        and of the head."""
        cnn = self.own(model)
        assert isinstance(cnn, CNN)
        _, h, w = cnn.image
        outputs = 0
        for layer in cnn.body:
            if isinstance(layer, nn.Conv2d):
                outputs += layer.out_channels * h * w
                h, w = -(-h // 2), -(-w // 2)
        outputs += cnn.head.out_features
        return 4 * batch * 2 * outputs
