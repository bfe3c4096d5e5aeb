"""The built-in ``image_folder`` task: a site's PNG images, one folder per class and split.

A site's data directory holds::

    schema.json             {"task": "image_folder",
                             "image": {"height": H, "width": W, "channels": C},
                             "class_names": ["cat", "dog", ...]}
    train/<class name>/*.png
    val/<class name>/*.png

Every image is decoded with Pillow, converted to ``C`` channels (``L`` for 1, ``RGB`` for
3; a 16-bit grayscale image keeps its depth), must be exactly ``H`` x ``W`` pixels and is
scaled to ``[0, 1]``; an example is the image flattened channel by channel, row by row
(``[C * H * W]`` float32), in the order of the input names ``c{c}y{y}x{x}``. A site may
lack a class; a folder that is not a declared class, a file that is not a PNG image, a link
or an empty split is an error naming the path. The :class:`~baton.ml.data.Schema` depends
only on the declared shape and classes, so it hashes the same at every site that declares
them; a model normalizes the pixels with its :class:`~baton.ml.norm.InputNorm` as any
other input (the ``cnn`` family reads them back as images).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from baton.errors import DataError
from baton.ml.data import SCHEMA_FILE, Schema, SiteData, Split
from baton.ml.task import Metric

__all__ = [
    "IMAGE_FOLDER",
    "SPLITS",
    "TASK",
    "ImageFolderTask",
    "ImageShape",
    "image_schema",
    "image_schema_json",
    "read_image_schema",
    "read_image_split",
]

logger = logging.getLogger(__name__)

TASK = "image_folder"
"""The task's name, as schemas and plans spell it."""
SPLITS = ("train", "val")
"""The split folders a site holds."""
_MODES = {1: "L", 3: "RGB"}
"""The Pillow mode an image is converted to, by channel count."""
_MAX_SIDE = 4096
"""The largest height or width a schema may declare."""
_ACCURACY = Metric(name="accuracy", higher_is_better=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageShape:
    """The declared size of every image of a task."""

    height: int
    """Rows of pixels."""
    width: int
    """Columns of pixels."""
    channels: int
    """1 (grayscale) or 3 (RGB)."""

    def __post_init__(self) -> None:
        for key in ("height", "width"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_SIDE:
                raise ValueError(f"image {key!r} must be an integer in [1, {_MAX_SIDE}]")
        if isinstance(self.channels, bool) or self.channels not in _MODES:
            raise ValueError("image 'channels' must be 1 (grayscale) or 3 (RGB)")

    @property
    def size(self) -> int:
        """Inputs of one image: ``channels * height * width``."""
        return self.channels * self.height * self.width

    def input_names(self) -> tuple[str, ...]:
        """``c{c}y{y}x{x}`` for every input, in the order of the flattened image."""
        return tuple(
            f"c{c}y{y}x{x}"
            for c in range(self.channels)
            for y in range(self.height)
            for x in range(self.width)
        )


def image_schema(shape: ImageShape, class_names: tuple[str, ...]) -> Schema:
    """The :class:`Schema` of an image task: its inputs are the pixels of ``shape``.

    Raises:
        ValueError: Fewer than two class names, or a name repeated.
    """
    if len(set(class_names)) != len(class_names):
        raise ValueError("image class names must be unique")
    return Schema(
        task=TASK,
        feature_names=shape.input_names(),
        num_classes=len(class_names),
        class_names=class_names,
    )


def image_schema_json(shape: ImageShape, class_names: tuple[str, ...]) -> str:
    """The text of a site's ``schema.json`` declaring ``shape`` and ``class_names``."""
    image = {"height": shape.height, "width": shape.width, "channels": shape.channels}
    obj = {"task": TASK, "image": image, "class_names": list(class_names)}
    return json.dumps(obj, indent=2) + "\n"


def read_image_schema(path: Path) -> tuple[ImageShape, Schema]:
    """Reads and checks an image task's ``schema.json``.

    Raises:
        DataError: The file is missing or unreadable, or a key is missing, unknown or of the
            wrong type or value.
    """
    try:
        obj: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise DataError(f"{path}: not a readable JSON file") from None
    _keys(path, "schema", obj, {"task", "image", "class_names"})
    if obj["task"] != TASK:
        raise DataError(f"{path}: schema 'task' must be {TASK!r}")
    _keys(path, "schema 'image'", obj["image"], {"height", "width", "channels"})
    names = obj["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: schema 'class_names' must be a list of strings")
    bad = [n for n in names if not n or n in (".", "..") or "/" in n or "\\" in n]
    if bad:
        raise DataError(f"{path}: class name {bad[0]!r} cannot name a folder")
    try:
        shape = ImageShape(**obj["image"])
        return shape, image_schema(shape, tuple(names))
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None


def read_image_split(split_dir: Path, shape: ImageShape, schema: Schema) -> Split:
    """Reads every image of one split folder (``<class name>/*.png``), classes in schema
    order, files by name.

    Raises:
        DataError: The folder is missing or holds no image; or it holds something other
            than a declared class's folder, or a class folder holds something other than a
            PNG image of the declared size (the message names the path, never a pixel).
    """
    if split_dir.is_symlink() or not split_dir.is_dir():
        raise DataError(f"{split_dir}: folder not found (one folder per class expected)")
    for entry in sorted(split_dir.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            raise DataError(f"{entry}: not a class folder (a split holds one folder per class)")
        if entry.name not in schema.class_names:
            raise DataError(f"{entry}: folder {entry.name!r} is not a class the schema declares")
    rows: list[np.ndarray[Any, Any]] = []
    labels: list[int] = []
    for label, name in enumerate(schema.class_names):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            rows.append(_read_png(path, shape))
            labels.append(label)
    if not rows:
        raise DataError(f"{split_dir}: no images")
    logger.debug("read %d images from %s", len(rows), split_dir)
    return Split(x=np.stack(rows), y=np.asarray(labels, dtype=np.int64))


def _read_png(path: Path, shape: ImageShape) -> np.ndarray[Any, Any]:
    """One image as ``[C * H * W]`` float32 in ``[0, 1]``."""
    if path.is_symlink() or not path.is_file():
        raise DataError(f"{path}: not a PNG file (a class folder holds PNG files only)")
    if path.suffix.lower() != ".png":
        raise DataError(f"{path}: not a PNG file (a class folder holds PNG files only)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=["PNG"]) as img:
                size = img.size  # read from the header: nothing is decoded yet
                if size != (shape.width, shape.height):
                    raise DataError(
                        f"{path}: image is {size[1]}x{size[0]} (height x width), the schema "
                        f"declares {shape.height}x{shape.width}"
                    )
                pixels = _pixels(img, shape.channels)
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(f"{path}: not a readable PNG image") from None
    except (OSError, SyntaxError, ValueError):
        raise DataError(f"{path}: not a readable PNG image (truncated or corrupt)") from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1).reshape(-1))


def _pixels(img: Image.Image, channels: int) -> np.ndarray[Any, Any]:
    """The decoded image ``[H, W, C]`` as float32 in ``[0, 1]``."""
    if channels == 1 and img.mode.startswith("I;16"):
        deep = np.asarray(img, dtype=np.float32) / np.float32(65535.0)
        return deep[:, :, None]
    arr = np.asarray(img.convert(_MODES[channels]), dtype=np.float32) / np.float32(255.0)
    return arr.reshape(img.height, img.width, channels)


def _keys(path: Path, what: str, obj: Any, expected: set[str]) -> None:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {what} must be a JSON object")
    wrong = sorted(set(obj) ^ expected)
    if wrong:
        state = "unknown" if wrong[0] in obj else "missing"
        raise DataError(f"{path}: {what} key {wrong[0]!r} is {state}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageFolderTask:
    """A task whose sites hold PNG images in one folder per class (this module's layout)."""

    name: str = TASK
    primary_metric: Metric = _ACCURACY

    def read_site_data(self, site_dir: Path) -> tuple[Schema, SiteData]:
        """Reads ``schema.json`` and the ``train`` and ``val`` folders of ``site_dir``."""
        shape, schema = read_image_schema(site_dir / SCHEMA_FILE)
        train, val = (read_image_split(site_dir / s, shape, schema) for s in SPLITS)
        return schema, SiteData(train=train, val=val)


IMAGE_FOLDER = ImageFolderTask()
"""Image classification from PNG folders; ``cnn`` (or any family) on the pixels."""
