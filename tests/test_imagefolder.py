"""ImageNet-style image folders behind the in-memory data interface: decode, classes, errors, a real CLI run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_module
from PIL import Image

from dynprune.data import DataError, load_dataset
from dynprune.imagefolder import LazyImages
from dynprune.loader import BatchLoader

COLOURS = {"cat": (220, 30, 30), "dog": (30, 200, 40), "eel": (20, 40, 230)}


def write_folder(root: Path, per_class: dict[str, int]) -> None:
    """Solid-colour images with noise, of assorted sizes, modes and formats, in class sub-folders."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = (40 + 7 * i, 56) if i % 2 else (64, 48 + 5 * i)
                pixels = np.clip(np.array(colour) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(pixels)
                if i == 1:
                    img = img.convert("L")  # grayscale files become RGB
                img.save(folder / f"{i}.{'jpg' if i % 3 == 0 else 'png'}")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def test_folders_decode_to_center_crops_with_sorted_class_labels(tmp_path):
    write_folder(tmp_path, {"train": 6, "val": 2})
    data = load_dataset("imagefolder", tmp_path, val_size=3, image_size=32)
    assert data.num_classes == 3 and data.in_channels == 3 and data.image_size == 32
    assert len(data.train) + len(data.val) == 18 and len(data.test) == 6
    images, labels = data.test.images, data.test.labels
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == [0, 0, 1, 1, 2, 2]  # cat, dog, eel
    red = images[labels == 0].float().mean(dim=(0, 2, 3))
    blue = images[labels == 2].float().mean(dim=(0, 2, 3))
    assert red[0] > red[2] + 50 and blue[2] > blue[0] + 50  # colours survive (one grey file per class)


def test_streamed_folder_gives_the_batches_of_the_in_memory_one(tmp_path):
    """A split too big for --image-memory-gb is decoded per batch from disk: same batches, same augmentation."""
    write_folder(tmp_path, {"train": 6, "val": 2})
    held = load_dataset("imagefolder", tmp_path, val_size=3, image_size=32)
    streamed = load_dataset("imagefolder", tmp_path, val_size=3, image_size=32, image_memory_gb=0)
    assert isinstance(streamed.train.images, LazyImages) and isinstance(held.train.images, torch.Tensor)
    for split in ("train", "val", "test"):
        for train in (True, False):
            a = BatchLoader(getattr(held, split), held, 3, train=train, seed=1)
            b = BatchLoader(getattr(streamed, split), streamed, 3, train=train, seed=1)
            for (xa, ya), (xb, yb) in zip(a, b, strict=True):
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_image_folder_errors_are_one_clear_line(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir ROOT"):
        load_dataset("imagefolder", None)
    write_folder(tmp_path, {"train": 2})
    with pytest.raises(DataError, match="needs a val/ \\(or test/\\) folder"):
        load_dataset("imagefolder", tmp_path, val_size=1)
    (tmp_path / "val" / "owl").mkdir(parents=True)
    with pytest.raises(DataError, match="classes \\['owl'\\] are not in train/"):
        load_dataset("imagefolder", tmp_path, val_size=1)


def test_resnet18_trains_on_an_image_folder_through_the_cli(tmp_path):
    root = tmp_path / "images"
    write_folder(root, {"train": 8, "val": 2})
    out = tmp_path / "run"
    args = ("--dataset", "imagefolder", "--data-dir", str(root), "--model", "resnet18", "--image-size", "64")
    args += ("--val-size", "6", "--epochs", "2", "--batch-size", "6", "--lr", "0.02", "--warmup-epochs", "0")
    args += ("--image-memory-gb", "0", "--wandb", "disabled", "--no-latency", "--out", str(out))  # streamed
    args += ("--threads", "1")  # one per test, as conftest sets (two beside the other xdist worker only contend)
    proc = run_module("dynprune.train", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["dataset"] == "imagefolder" and 0 <= result["top1"] <= 100
    assert result["macs_dense"] > 100e6  # resnet18 at 64 x 64: ~150M MACs, the ImageNet stem and all


def test_an_empty_class_folder_and_an_unreadable_image_are_one_line(tmp_path):
    """Before: an empty train/ class became a class with no images (an output the data never teaches); a file
    that is not an image gave PIL's traceback."""
    write_folder(tmp_path, {"train": 2, "val": 1})
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="train/empty: a class folder with no images"):
        load_dataset("imagefolder", tmp_path, val_size=1)
    (tmp_path / "train" / "empty").rmdir()
    broken = next((tmp_path / "train").glob("*/*.png"))
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{broken.name}: cannot read this image"):
        load_dataset("imagefolder", tmp_path, val_size=1)


def test_an_unreadable_image_of_a_streamed_folder_is_a_data_error_mid_run(tmp_path):
    """Streamed folders decode per batch, after load_dataset: the error must still be one a CLI turns into one
    line (a DataError), not a traceback."""
    write_folder(tmp_path, {"train": 3, "val": 1})
    broken = next((tmp_path / "train").glob("*/*.png"))
    data = load_dataset("imagefolder", tmp_path, val_size=1, image_size=32, image_memory_gb=1e-9)
    assert isinstance(data.train.images, LazyImages)
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{broken.name}: cannot read this image"):
        for split in (data.train, data.val):  # wherever the split put the broken file
            for _ in BatchLoader(split, data, 4, train=False):
                pass
