"""Toy image sites: a square grayscale toy task (``digits``) rendered to PNG folders for the
built-in ``image_folder`` task."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from baton.errors import DataError
from baton.ml.data import SCHEMA_FILE, SiteData, Split
from baton.ml.images import SPLITS, ImageShape, image_schema_json
from sim.tasks import Federation

__all__ = ["image_shape_of", "write_image_federation", "write_image_site", "write_image_split"]


def image_shape_of(fed: Federation, *, scale: int = 1) -> ImageShape:
    """The grayscale image shape of a federation whose inputs are the pixels of a square
    image (``digits``: 8 x 8), each side ``scale`` times as long.

    Raises:
        DataError: The inputs are not a square number of pixels, or ``scale`` is below 1.
    """
    side = math.isqrt(fed.schema.num_inputs)
    if side * side != fed.schema.num_inputs or scale < 1:
        raise DataError(
            f"task {fed.schema.task!r}: {fed.schema.num_inputs} inputs are not a square image "
            f"(or scale {scale} is below 1)"
        )
    return ImageShape(height=side * scale, width=side * scale, channels=1)


def _peak(fed: Federation) -> float:
    """The largest input of the whole federation: it renders as white."""
    splits = [fed.test, *(s for d in fed.sites.values() for s in (d.train, d.val))]
    return max(float(s.x.max()) for s in splits if len(s)) or 1.0


def write_image_split(
    split_dir: Path, split: Split, shape: ImageShape, class_names: tuple[str, ...], *, peak: float
) -> None:
    """Writes each example as ``split_dir/<class name>/<index>.png``: its inputs read as a
    square image, scaled so ``peak`` is white and enlarged to ``shape`` (nearest pixel)."""
    side = math.isqrt(split.x.shape[1])
    scale = shape.height // side
    levels = np.clip(np.rint(split.x / peak * 255.0), 0, 255).astype(np.uint8)
    for index, (row, label) in enumerate(zip(levels, split.y.tolist(), strict=True)):
        pixels: np.ndarray[Any, Any] = row.reshape(side, side)
        pixels = np.kron(pixels, np.ones((scale, scale), dtype=np.uint8))
        class_dir = split_dir / class_names[label]
        class_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(class_dir / f"{index:05d}.png", format="PNG")


def write_image_site(
    site_dir: Path, data: SiteData, shape: ImageShape, class_names: tuple[str, ...], *, peak: float
) -> None:
    """Writes a site's ``schema.json`` and its ``train/`` and ``val/`` image folders."""
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / SCHEMA_FILE).write_text(image_schema_json(shape, class_names), encoding="utf-8")
    for name, split in zip(SPLITS, (data.train, data.val), strict=True):
        write_image_split(site_dir / name, split, shape, class_names, peak=peak)


def write_image_federation(
    fed: Federation,
    site_dirs: Mapping[str, Path],
    *,
    scale: int = 1,
    test_dir: Path | None = None,
) -> ImageShape:
    """Writes every site of ``fed`` as PNG folders into its directory in ``site_dirs``, and
    the held-out test set into ``test_dir`` (class folders) if given.

    Returns:
        The images' shape.

    Raises:
        DataError: The task's inputs are not a square image.
    """
    shape = image_shape_of(fed, scale=scale)
    peak = _peak(fed)
    for site_id, data in fed.sites.items():
        write_image_site(site_dirs[site_id], data, shape, fed.schema.class_names, peak=peak)
    if test_dir is not None:
        write_image_split(test_dir, fed.test, shape, fed.schema.class_names, peak=peak)
    return shape
