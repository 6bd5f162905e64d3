"""Data sets held in memory as uint8 tensors, read from their original file formats.

Files are looked up in ``--data-dir``, else ``$DYNPRUNE_DATA``, else ``./data``; each data set has its own
sub-folder (``fashion-mnist/``, ``mnist/``, ``cifar10/``, ``cifar100/``). Every file is checked against the
published size (where known) and md5 before it is read: a corrupt file is an error, never training data.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .datafiles import (
    ENV_VAR,
    DataError,
    MissingDataError,
    RemoteFile,
    download_file,
    missing_message,
    resolve_data_dir,
    verify_file,
)
from .formats import Arrays, cifar_reader, read_mnist_like, synthetic_arrays


@dataclass
class DataSplits:
    """Train/val/test arrays plus what models and loaders need to know about the data set."""

    name: str
    train: Arrays
    val: Arrays
    test: Arrays
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool
    crop_padding: int

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


@dataclass(frozen=True)
class DatasetSpec:
    folder: str
    files: tuple[RemoteFile, ...]
    base_url: str
    reader: Callable[[Path], tuple[Arrays, Arrays]]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool
    crop_padding: int
    #: shipped inside the package (``dynprune/<folder>/``): no --data-dir, no download
    bundled: bool = False


#: where bundled data sets live: the package folder itself
BUNDLED_ROOT = Path(__file__).resolve().parent


_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"

_FASHION_MNIST = DatasetSpec(
    folder="fashion-mnist",
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
        RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29515),
        RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4422102),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5148),
    ),
    base_url=_FMNIST_URL,
    reader=read_mnist_like,
    num_classes=10,
    mean=(0.2860,),
    std=(0.3530,),
    flip=True,  # clothes stay clothes when mirrored
    crop_padding=2,
)

DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": _FASHION_MNIST,
    # 600 training and 100 test images per class of Fashion-MNIST, the first of each class in the published files'
    # order, in the original idx format (MIT licensed, Zalando Research; dynprune/sample/README.md): the tests' and
    # smoke runs' data where the full files are not at hand. Default --val-size 5000 leaves 1,000 to train on. Every
    # property but the files is the full set's.
    "fashion-mnist-sample": dataclasses.replace(
        _FASHION_MNIST,
        folder="sample",
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "9b726f05c7c5b775685f5135b11aa7cf", 2615845),
            RemoteFile("train-labels-idx1-ubyte.gz", "84b343bef7b858098d917ad09f8aab9d", 3078),
            RemoteFile("t10k-images-idx3-ubyte.gz", "b2ab7aaadae1a58bdcedfba84aab8b18", 436247),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "05cbae676d53b2aedebc53a7a0016b7f", 519),
        ),
        base_url="",
        bundled=True,
    ),
    "mnist": DatasetSpec(
        folder="mnist",
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542),
        ),
        base_url=_MNIST_URL,
        reader=read_mnist_like,
        num_classes=10,
        mean=(0.1307,),
        std=(0.3081,),
        flip=False,  # a mirrored digit is another symbol
        crop_padding=2,
    ),
    "cifar10": DatasetSpec(
        folder="cifar10",
        files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071),),
        base_url=_CIFAR_URL,
        reader=cifar_reader(
            "cifar-10-python.tar.gz",
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            b"labels",
        ),
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        flip=True,
        crop_padding=4,
    ),
    "cifar100": DatasetSpec(
        folder="cifar100",
        files=(RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169001437),),
        base_url=_CIFAR_URL,
        reader=cifar_reader("cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"], b"fine_labels"),
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        flip=True,
        crop_padding=4,
    ),
}
# Extracted CIFAR folders are accepted too; their per-file md5s (as published alongside torchvision's loader).
EXTRACTED_MD5 = {
    "cifar-10-batches-py": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
    "cifar-100-python": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    },
}
SYNTHETIC = "synthetic"
IMAGE_FOLDER = "imagefolder"  # --data-dir ROOT with train/<class>/ and val/<class>/ image folders
DATASET_NAMES = (*DATASETS, SYNTHETIC, IMAGE_FOLDER)


# ----------------------------------------------------------------------------------------------- files
def _extracted_folder(folder: Path) -> Path | None:
    for inner in EXTRACTED_MD5:
        if (folder / inner).is_dir():
            return folder / inner
    return None


def ensure_files(spec: DatasetSpec, root: Path, download: bool, timeout: float = 15.0) -> Path:
    """Return the folder holding ``spec``'s verified files, downloading missing ones if allowed."""
    folder = root / spec.folder
    extracted = _extracted_folder(folder)
    if extracted is not None:
        for name, md5 in EXTRACTED_MD5[extracted.name].items():
            if not (extracted / name).is_file():
                raise DataError(f"{extracted}: missing {name}")
            verify_file(extracted / name, md5, None)
        return folder
    missing = [f for f in spec.files if not (folder / f.name).is_file()]
    if missing and download:
        created = [p for p in (folder, *folder.parents) if not p.exists()]  # what a failed lookup must not leave
        try:
            for f in missing:
                download_file(spec.base_url + f.name, folder / f.name, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            for path in created:  # innermost first; only if still empty (a partial download is removed too)
                for part in path.glob("*.part") if path.is_dir() else ():
                    part.unlink()
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
            why = f"download failed ({exc})"
            raise MissingDataError(missing_message(folder, missing, why), folder, why) from None
    elif missing:
        why = "downloads are off"
        raise MissingDataError(missing_message(folder, missing, why), folder, why)
    for f in spec.files:
        verify_file(folder / f.name, f.md5, f.size)
    return folder


#: the sample shipped in the package that a data set's *default* run falls back to (``full_or_sample``)
SAMPLES = {"fashion-mnist": "fashion-mnist-sample"}


def full_or_sample(name: str, data_dir: str | os.PathLike | None, download: bool) -> tuple[str, str | None]:
    """(the data set to train on, a one-line notice or None): ``name`` where its files are found or downloaded,
    else its shipped sample (``SAMPLES``) and a notice saying so, why, and how to get the full files.

    Only for a data set the user did not choose (the default): so that the README's main command runs on a fresh
    machine without network. A chosen data set is loaded as chosen, and its missing files are an error."""
    sample = SAMPLES.get(name)
    if sample is None:
        return name, None
    try:
        ensure_files(DATASETS[name], resolve_data_dir(data_dir), download)
    except MissingDataError as exc:
        notice = (
            f"no {name} files in {exc.folder} and {exc.why}, so this run trains on {sample}, a sample of it "
            f"shipped in the package (figures not comparable with the full set's); for the full data set let it "
            f"download (a network, no --no-download) or put its files in {exc.folder} (or point --data-dir / "
            f"${ENV_VAR} at their parent folder)"
        )
        return sample, notice
    return name, None


# ----------------------------------------------------------------------------------------------- splits
def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    val_size: int = 5000,
    split_seed: int = 0,
    download: bool = True,
    image_size: int = 224,
    image_memory_gb: float = 4.0,
) -> DataSplits:
    """Load a data set into memory and carve a fixed validation split out of its training set.

    ``image_size`` and ``image_memory_gb`` apply to ``imagefolder`` only (a split bigger than that decoded is
    streamed from disk per batch; the other data sets have their published size and always fit)."""
    if name == SYNTHETIC:
        train, test = synthetic_arrays()
        mean, std, num_classes, flip, pad = (0.5,), (0.25,), 10, False, 2
    elif name == IMAGE_FOLDER:
        from .imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderError, read_image_folder

        if data_dir is None:
            raise DataError("--dataset imagefolder needs --data-dir ROOT (with train/<class>/ and val/<class>/)")
        try:
            (train_x, train_y), (test_x, test_y), num_classes = read_image_folder(
                Path(data_dir), image_size, image_memory_gb
            )
        except (ImageFolderError, OSError) as exc:
            raise DataError(str(exc)) from None
        train, test = Arrays(train_x, train_y), Arrays(test_x, test_y)
        mean, std, flip, pad = IMAGENET_MEAN, IMAGENET_STD, True, max(1, image_size // 16)
    elif name in DATASETS:
        spec = DATASETS[name]
        root = BUNDLED_ROOT if spec.bundled else resolve_data_dir(data_dir)
        folder = ensure_files(spec, root, download and not spec.bundled)
        train, test = spec.reader(folder)
        mean, std, num_classes, flip, pad = (
            spec.mean,
            spec.std,
            spec.num_classes,
            spec.flip,
            spec.crop_padding,
        )
    else:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(DATASET_NAMES)}")
    if not 0 <= val_size < len(train):
        raise DataError(f"--val-size must be in [0, {len(train)}) for {name}, got {val_size}")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
    val, train = train.take(perm[:val_size]), train.take(perm[val_size:])
    return DataSplits(name, train, val, test, num_classes, mean, std, flip, pad)


def subset(arrays: Arrays, n: int) -> Arrays:
    """First ``n`` examples (0 = all)."""
    return arrays if n <= 0 else arrays.take(slice(0, n))


def data_of_checkpoint(ckpt: dict, data_dir: str | None = None) -> DataSplits:
    """The data set (and validation split) a checkpoint was trained with, read from its saved config."""
    cfg = ckpt.get("config") or {}
    splits = load_dataset(
        cfg.get("dataset", "fashion-mnist"),
        data_dir or cfg.get("data_dir"),
        cfg.get("val_size", 5000),
        image_size=cfg.get("image_size", 224),
    )
    # the test images its result.json was scored on (a smoke run may have scored the first N only)
    return dataclasses.replace(splits, test=subset(splits.test, cfg.get("test_subset", 0)))
