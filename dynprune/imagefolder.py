"""ImageNet-style folders: ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg`` (or ``test/``).

Images are decoded with Pillow, resized so the shorter side is ``image_size * 8/7`` (ImageNet's 256 for 224) and
center-cropped to ``image_size``. A split that fits in ``memory_gb`` (N x 3 x S x S bytes: 1.2 GB per 10,000
images at 224) is decoded once and held in memory as uint8 like every other data set; a larger one (a full
ImageNet at 224 is ~190 GB) becomes ``LazyImages``, decoded batch by batch from disk. Either way the loader, the
augmentation and DDP sharding are the same code (each rank decodes only its own slice of a batch).
Classes are the sorted sub-folder names of ``train/``; ``val/`` must use the same names.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .datafiles import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
EVAL_SPLITS = ("val", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFolderError(DataError):
    """A data error of an image folder: one line through every CLI, also when a streamed image fails mid-run."""


def list_images(split: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Image paths and labels of one split folder; ``classes`` fixes the label order (else sorted folders)."""
    if not split.is_dir():
        raise ImageFolderError(f"{split}: no such folder (expected class sub-folders of images)")
    try:
        found = sorted(d.name for d in split.iterdir() if d.is_dir())
    except OSError as exc:
        raise ImageFolderError(f"{split}: cannot list this folder ({exc.strerror or exc})") from None
    is_train = classes is None
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ImageFolderError(f"{split}: classes {unknown[:5]} are not in train/ (train has {len(classes)})")
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = split / name
        if not folder.is_dir():
            continue
        try:
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as exc:
            raise ImageFolderError(f"{folder}: cannot list this folder ({exc.strerror or exc})") from None
        if is_train and not files:  # a class no training image teaches, yet counted in the output layer
            raise ImageFolderError(
                f"{folder}: a class folder with no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it"
            )
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise ImageFolderError(f"{split}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return paths, labels, classes


def decode(path: Path, size: int) -> np.ndarray:
    """RGB, shorter side to round(size * 8 / 7), center crop ``size`` x ``size``: uint8 [3, size, size]."""
    try:
        return _decode(path, size)
    except OSError as exc:  # unreadable, truncated or not an image (PIL's UnidentifiedImageError is an OSError)
        raise ImageFolderError(f"{path}: cannot read this image ({exc.strerror or exc})") from None


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = round(size * 8 / 7) / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


DECODE_THREADS = 8  # Pillow releases the GIL while decoding and resizing


def decode_many(paths: Sequence[Path], size: int, progress: str | None = None) -> torch.Tensor:
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        decoded = pool.map(lambda p: decode(p, size), paths)
        if progress:
            decoded = tqdm(decoded, total=len(paths), desc=progress, leave=False, mininterval=2.0)
        for i, array in enumerate(decoded):
            images[i] = array
    return torch.from_numpy(images)


class LazyImages:
    """Image files that stand in for an [N, 3, S, S] uint8 tensor: indexing with a tensor of positions decodes
    those images (a batch); ``select`` narrows the file list (train/val splits, subsets) without decoding."""

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths = list(paths)
        self.size = size

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), 3, self.size, self.size))

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, index: torch.Tensor | slice) -> LazyImages:
        if isinstance(index, slice):
            return LazyImages(self.paths[index], self.size)
        return LazyImages([self.paths[i] for i in index.tolist()], self.size)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return decode_many([self.paths[i] for i in index.cpu().tolist()], self.size)

    def to(self, device: torch.device | str) -> LazyImages:
        return self  # decoded batches are moved to the device by the loader


def read_image_folder(root: Path, size: int, memory_gb: float) -> tuple[tuple, tuple, int]:
    """((train images, labels), (eval images, labels), number of classes) of an image-folder root; a split
    larger than ``memory_gb`` decoded stays on disk as ``LazyImages``."""
    train_paths, train_labels, classes = list_images(root / "train")
    eval_split = next((root / s for s in EVAL_SPLITS if (root / s).is_dir()), None)
    if eval_split is None:
        raise ImageFolderError(f"{root}: needs a val/ (or test/) folder beside train/")
    eval_paths, eval_labels, _ = list_images(eval_split, classes)

    def images(paths: list[Path], name: str) -> torch.Tensor | LazyImages:
        if len(paths) * 3 * size * size > memory_gb * 2**30:
            return LazyImages(paths, size)
        return decode_many(paths, size, progress=f"decode {name}")

    train = images(train_paths, "train"), torch.tensor(train_labels, dtype=torch.long)
    test = images(eval_paths, eval_split.name), torch.tensor(eval_labels, dtype=torch.long)
    return train, test, len(classes)
