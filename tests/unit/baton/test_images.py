"""The ``image_folder`` task: PNG class folders read into pixels, and every way they are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from baton.errors import DataError
from baton.ml.data import SCHEMA_FILE
from baton.ml.images import IMAGE_FOLDER, ImageShape, image_schema, image_schema_json
from baton.ml.task import site_task
from sim.images import image_shape_of, write_image_federation
from sim.tasks import Partition, make_federation

CLASSES = ("cat", "dog")
SHAPE = ImageShape(height=2, width=3, channels=1)


def _png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(path, format="PNG")
    return path


def _site(root: Path, shape: ImageShape = SHAPE, classes: tuple[str, ...] = CLASSES) -> Path:
    """A site with one gray image per class and split: pixel value 10 * (class + 1)."""
    (root / SCHEMA_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / SCHEMA_FILE).write_text(image_schema_json(shape, classes), encoding="utf-8")
    for split in ("train", "val"):
        for label, name in enumerate(classes):
            pixels = np.full((shape.height, shape.width), 10 * (label + 1), dtype=np.uint8)
            _png(root / split / name / "a.png", pixels)
    return root


def test_a_site_reads_flattened_scaled_pixels_labelled_by_folder(tmp_path: Path) -> None:
    site = _site(tmp_path)
    rows = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    _png(site / "train" / "dog" / "b.png", rows)
    assert site_task(site) is IMAGE_FOLDER
    schema, data = IMAGE_FOLDER.read_site_data(site)
    assert schema.task == "image_folder"
    assert schema.feature_names == ("c0y0x0", "c0y0x1", "c0y0x2", "c0y1x0", "c0y1x1", "c0y1x2")
    assert schema.class_names == CLASSES
    assert data.train.x.dtype == np.float32
    assert data.train.y.tolist() == [0, 1, 1]  # classes in schema order, files by name
    np.testing.assert_allclose(data.train.x[0], np.full(6, 10 / 255), rtol=1e-6)
    np.testing.assert_allclose(data.train.x[2], np.arange(6) * 40 / 255, rtol=1e-6)
    assert data.val.y.tolist() == [0, 1]


def test_rgb_images_flatten_channel_by_channel_and_gray_files_are_converted(
    tmp_path: Path,
) -> None:
    shape = ImageShape(height=1, width=2, channels=3)
    site = _site(tmp_path, shape)  # gray files: each channel holds the gray level
    rgb = np.array([[[255, 0, 51], [0, 102, 255]]], dtype=np.uint8)
    _png(site / "train" / "cat" / "b.png", rgb, mode="RGBA")  # alpha is dropped
    schema, data = IMAGE_FOLDER.read_site_data(site)
    assert schema.num_inputs == 6
    assert schema.feature_names[:3] == ("c0y0x0", "c0y0x1", "c1y0x0")
    np.testing.assert_allclose(data.train.x[0], np.full(6, 10 / 255), rtol=1e-6)
    np.testing.assert_allclose(data.train.x[1], [1.0, 0.0, 0.0, 0.4, 0.2, 1.0], rtol=1e-6)


def test_sixteen_bit_grayscale_keeps_its_depth(tmp_path: Path) -> None:
    site = _site(tmp_path)
    deep = np.full((2, 3), 65535, dtype=np.uint16)
    deep[0, 0] = 32768
    _png(site / "train" / "cat" / "b.png", deep)
    _, data = IMAGE_FOLDER.read_site_data(site)
    np.testing.assert_allclose(data.train.x[1][:2], [32768 / 65535, 1.0], rtol=1e-6)


def test_the_schema_hash_depends_only_on_the_declared_shape_and_classes(tmp_path: Path) -> None:
    one, _ = IMAGE_FOLDER.read_site_data(_site(tmp_path / "one"))
    two = _site(tmp_path / "two")
    _png(two / "train" / "cat" / "more.png", np.zeros((2, 3), dtype=np.uint8))
    other, _ = IMAGE_FOLDER.read_site_data(two)
    assert one.schema_hash() == other.schema_hash() == image_schema(SHAPE, CLASSES).schema_hash()
    wider = image_schema(ImageShape(height=3, width=2, channels=1), CLASSES)
    assert wider.schema_hash() != one.schema_hash()
    assert image_schema(SHAPE, ("dog", "cat")).schema_hash() != one.schema_hash()


def _refused(site: Path, message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)) as err:
        IMAGE_FOLDER.read_site_data(site)
    text = err.value.message.replace(str(site), "<site>")
    assert "255" not in text  # never a pixel value
    assert "0.0" not in text


def test_an_image_of_another_size_is_refused_by_name(tmp_path: Path) -> None:
    site = _site(tmp_path)
    _png(site / "val" / "dog" / "big.png", np.full((4, 3), 255, dtype=np.uint8))
    _refused(site, f"{site / 'val' / 'dog' / 'big.png'}: image is 4x3 (height x width), ")


def test_a_folder_that_is_no_declared_class_is_refused_by_name(tmp_path: Path) -> None:
    site = _site(tmp_path)
    _png(site / "train" / "horse" / "a.png", np.zeros((2, 3), dtype=np.uint8))
    _refused(site, f"{site / 'train' / 'horse'}: folder 'horse' is not a class the schema")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"hello", "not a PNG file"),
        ("fake.png", b"\x89PNG\r\n\x1a\nnot really", "not a readable PNG image"),
        ("photo.PNG", None, "not a readable PNG image"),  # a JPEG under a PNG name
    ],
)
def test_a_file_that_is_not_a_png_image_is_refused_by_name(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    site = _site(tmp_path)
    path = site / "train" / "cat" / name
    if content is None:
        Image.fromarray(np.zeros((2, 3), dtype=np.uint8)).save(path, format="JPEG")
    else:
        path.write_bytes(content)
    _refused(site, f"{path}: {message}")


def test_a_truncated_png_is_refused_by_name(tmp_path: Path) -> None:
    site = _site(tmp_path)
    path = _png(site / "train" / "cat" / "cut.png", np.arange(6, dtype=np.uint8).reshape(2, 3))
    path.write_bytes(path.read_bytes()[:50])  # the header, part of the pixels
    _refused(site, f"{path}: not a readable PNG image")


def test_links_and_stray_files_in_a_split_are_refused(tmp_path: Path) -> None:
    site = _site(tmp_path)
    (site / "train" / "README").write_text("x")
    _refused(site, f"{site / 'train' / 'README'}: not a class folder")
    (site / "train" / "README").unlink()
    outside = _png(tmp_path / "elsewhere.png", np.zeros((2, 3), dtype=np.uint8))
    (site / "train" / "cat" / "linked.png").symlink_to(outside)
    _refused(site, f"{site / 'train' / 'cat' / 'linked.png'}: not a PNG file")


def test_an_empty_or_missing_split_is_refused(tmp_path: Path) -> None:
    site = _site(tmp_path)
    for image in (site / "val").glob("*/*.png"):
        image.unlink()
    _refused(site, f"{site / 'val'}: no images")
    for folder in (site / "val").iterdir():
        folder.rmdir()
    (site / "val").rmdir()
    _refused(site, f"{site / 'val'}: folder not found")


GOOD = {"task": "image_folder", "image": {"height": 2, "width": 3, "channels": 1}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image": None}, "schema key 'image' is missing"),
        ({"colour": True}, "schema key 'colour' is unknown"),
        ({"task": "tabular"}, "schema 'task' must be 'image_folder'"),
        ({"image": {"height": 2, "width": 3}}, "schema 'image' key 'channels' is missing"),
        ({"image": {"height": 2, "width": 3, "channels": 2}}, "'channels' must be 1 (grayscale)"),
        ({"image": {"height": 0, "width": 3, "channels": 1}}, "'height' must be an integer in"),
        ({"class_names": ["a", "../b"]}, "class name '../b' cannot name a folder"),
        ({"class_names": ["a", 7]}, "schema 'class_names' must be a list of strings"),
        ({"class_names": ["a", "a"]}, "image class names must be unique"),
        ({"class_names": ["a"]}, "num_classes >= 2"),
    ],
)
def test_a_bad_schema_is_refused_naming_the_key(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    site = _site(tmp_path)
    schema = {**GOOD, "class_names": ["a", "b"], **changes}
    (site / SCHEMA_FILE).write_text(
        json.dumps({k: v for k, v in schema.items() if v is not None}), encoding="utf-8"
    )
    _refused(site, f"{site / SCHEMA_FILE}: ")
    _refused(site, message)
    (site / SCHEMA_FILE).write_text("[1, 2]", encoding="utf-8")
    _refused(site, f"{site / SCHEMA_FILE}: schema must be a JSON object")


def test_digits_render_to_png_sites_that_read_back_as_the_same_examples(tmp_path: Path) -> None:
    sites = ["a", "b"]
    fed = make_federation("digits", sites, Partition(kind="iid"), seed=0)
    dirs = {s: tmp_path / s for s in sites}
    shape = write_image_federation(fed, dirs, scale=2, test_dir=tmp_path / "test")
    assert shape == ImageShape(height=16, width=16, channels=1)
    schema, data = IMAGE_FOLDER.read_site_data(dirs["a"])
    assert schema.num_inputs == 256
    assert schema.class_names == fed.schema.class_names
    # The examples come back grouped by class, each 8x8 pixel a 2x2 block scaled to [0, 1]
    # (digits' levels run from 0 to 16, the peak; PNG holds 8 bits).
    source = fed.sites["a"].train
    order = np.argsort(source.y, kind="stable")
    np.testing.assert_array_equal(data.train.y, source.y[order])
    expected = np.stack([np.kron(r.reshape(8, 8), np.ones((2, 2))) for r in source.x[order]])
    np.testing.assert_allclose(data.train.x, expected.reshape(-1, 256) / 16, atol=0.5 / 255)
    assert len(list((tmp_path / "test").glob("*/*.png"))) == len(fed.test)
    with pytest.raises(DataError, match="13 inputs are not a square image"):
        image_shape_of(make_federation("wine", sites, Partition(kind="iid"), seed=0))
