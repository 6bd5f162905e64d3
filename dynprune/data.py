"""Data sets held in memory as uint8 tensors, read from their original file formats.

Files are looked up in ``--data-dir``, else ``$DYNPRUNE_DATA``, else ``./data``; each data set has its own
sub-folder (``fashion-mnist/``, ``mnist/``, ``cifar10/``, ``cifar100/``). Every file is checked against the
published size (where known) and md5 before it is read: a corrupt file is an error, never training data.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from .imagefolder import LazyImages

ENV_VAR = "DYNPRUNE_DATA"


class DataError(RuntimeError):
    """A data set is missing, corrupt or unknown; the message says which file and what was expected."""


class MissingDataError(DataError):
    """A data set's files are neither in ``folder`` nor downloadable (``why``: how the download failed, or that
    downloads are off). Files that are there but corrupt are a plain DataError: never a reason to fall back."""

    def __init__(self, message: str, folder: Path, why: str) -> None:
        super().__init__(message)
        self.folder = folder
        self.why = why


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str
    size: int | None = None


@dataclass
class Arrays:
    """Images as uint8 [N, C, H, W] (or image files decoded per batch) and labels as int64 [N]."""

    images: torch.Tensor | LazyImages
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: torch.Tensor | slice) -> Arrays:
        if isinstance(self.images, LazyImages):  # a streamed image folder: narrow the file list, do not decode
            return Arrays(self.images.select(index), self.labels[index])
        return Arrays(self.images[index], self.labels[index])


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


# ----------------------------------------------------------------------------------------------- readers
def read_idx(path: Path) -> torch.Tensor:
    """Read an idx file (optionally gzipped), as published for MNIST and Fashion-MNIST."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:  # unreadable (permissions, a folder in its place) or a cut .gz
        raise DataError(f"{path}: cannot read this data file ({getattr(exc, 'strerror', None) or exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = 1
    for d in dims:
        expected *= d
    if len(raw) - offset != expected:
        raise DataError(f"{path}: idx header says {dims} ({expected} bytes) but holds {len(raw) - offset}")
    return torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8).reshape(dims)


def _read_mnist_like(folder: Path) -> tuple[Arrays, Arrays]:
    def split(prefix: str) -> Arrays:
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz").unsqueeze(1)  # [N, 1, 28, 28]
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").long()
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{folder}: {prefix} has {images.shape[0]} images but {labels.shape[0]} labels")
        return Arrays(images, labels)

    return split("train"), split("t10k")


def _unpickle(blob: bytes) -> dict:
    # The CIFAR batches are pickled dicts of bytes keys -> numpy arrays / lists; only read files whose md5
    # matched the published one (checked before this is called).
    return pickle.loads(blob, encoding="bytes")


def read_cifar_batches(blobs: list[bytes], label_key: bytes) -> Arrays:
    """Decode CIFAR python batches: dict with b'data' uint8 [N, 3072] (RGB planes) and the label list."""
    images, labels = [], []
    for blob in blobs:
        entry = _unpickle(blob)
        data = torch.as_tensor(entry[b"data"], dtype=torch.uint8)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(torch.as_tensor(entry[label_key], dtype=torch.long))
    return Arrays(torch.cat(images), torch.cat(labels))


def _cifar_reader(archive: str, inner: str, train: list[str], test: list[str], label_key: bytes):
    """Reads either the official tar.gz (without extracting it) or the extracted folder."""

    def read(folder: Path) -> tuple[Arrays, Arrays]:
        def blobs(names: list[str]) -> list[bytes]:
            extracted = folder / inner
            if extracted.is_dir():
                return [(extracted / n).read_bytes() for n in names]
            with tarfile.open(folder / archive, "r:gz") as tar:
                out = []
                for n in names:
                    member = tar.extractfile(f"{inner}/{n}")
                    if member is None:
                        raise DataError(f"{folder / archive}: missing member {inner}/{n}")
                    out.append(member.read())
                return out

        return read_cifar_batches(blobs(train), label_key), read_cifar_batches(blobs(test), label_key)

    return read


def _synthetic(n_train: int = 12000, n_test: int = 2000, seed: int = 0) -> tuple[Arrays, Arrays]:
    """Procedural 10-class 1x28x28 images: each class is an oriented grating with its own frequency.

    Only for tests and smoke runs: learnable in a few hundred steps, no files needed.
    """
    gen = torch.Generator().manual_seed(seed)

    def make(n: int) -> Arrays:
        labels = torch.randint(0, 10, (n,), generator=gen)
        angle = labels.float() * (torch.pi / 10)  # [N]
        freq = 0.25 + 0.05 * (labels % 3).float()
        coords = torch.arange(28).float() - 13.5
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # [28, 28]
        proj = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
        phase = torch.rand(n, 1, 1, generator=gen) * 2 * torch.pi
        img = torch.sin(proj * freq[:, None, None] + phase) + 0.4 * torch.randn(n, 28, 28, generator=gen)
        img = ((img.clamp(-1.5, 1.5) + 1.5) / 3 * 255).round().to(torch.uint8)
        return Arrays(img.unsqueeze(1), labels)

    return make(n_train), make(n_test)


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
    reader=_read_mnist_like,
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
        reader=_read_mnist_like,
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
        reader=_cifar_reader(
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
        reader=_cifar_reader("cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"], b"fine_labels"),
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
def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``--data-dir`` wins, then ``$DYNPRUNE_DATA``, then ``./data``."""
    if data_dir:
        return Path(data_dir)
    return Path(os.environ.get(ENV_VAR) or "data")


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, md5: str, size: int | None) -> None:
    if size is not None and path.stat().st_size != size:
        raise DataError(f"{path}: size {path.stat().st_size} bytes, expected {size}; delete it and retry")
    try:
        actual = md5sum(path)
    except OSError as exc:  # there but unreadable: permissions, or a folder in the file's place
        raise DataError(f"{path}: cannot read this data file ({exc.strerror or exc})") from None
    if actual != md5:
        raise DataError(f"{path}: md5 {actual}, expected {md5}; the file is corrupt, delete it and retry")


def _download(url: str, dest: Path, timeout: float) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as fh:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            fh.write(chunk)
    tmp.replace(dest)  # atomic: a half-written download never looks like a data file


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
                _download(spec.base_url + f.name, folder / f.name, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            for path in created:  # innermost first; only if still empty (a partial download is removed too)
                for part in path.glob("*.part") if path.is_dir() else ():
                    part.unlink()
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
            why = f"download failed ({exc})"
            raise MissingDataError(_missing_message(spec, folder, missing, why), folder, why) from None
    elif missing:
        why = "downloads are off"
        raise MissingDataError(_missing_message(spec, folder, missing, why), folder, why)
    for f in spec.files:
        verify_file(folder / f.name, f.md5, f.size)
    return folder


def _missing_message(spec: DatasetSpec, folder: Path, missing: list[RemoteFile], why: str) -> str:
    names = ", ".join(f"{f.name} (md5 {f.md5})" for f in missing)
    return (
        f"data set files not found in {folder} and {why}: expected {names}; "
        f"put them there or point --data-dir / ${ENV_VAR} at their parent folder"
    )


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
        train, test = _synthetic()
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


# ----------------------------------------------------------------------------------------------- loader
class BatchLoader:
    """Yields normalised float batches from in-memory uint8 arrays; augmentation is vectorised per batch.

    Randomness comes from one ``torch.Generator`` whose state is saved in checkpoints, so a resumed run sees
    exactly the batches an uninterrupted one would. Under torchrun (``shard=(rank, world_size)``) every rank draws
    the same global batch and keeps its ``rank::world_size`` slice, so the ranks together see what one process
    would.
    """

    def __init__(
        self,
        arrays: Arrays,
        splits: DataSplits,
        batch_size: int,
        train: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.rank, self.world_size = shard
        if batch_size % self.world_size:
            raise ValueError(f"--batch-size {batch_size} must be divisible by the {self.world_size} processes")
        self.arrays = arrays
        self.batch_size = batch_size
        self.train = train
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)
        c = arrays.images.shape[1]
        self.mean = torch.tensor(splits.mean, device=self.device).view(1, c, 1, 1) * 255
        self.std = torch.tensor(splits.std, device=self.device).view(1, c, 1, 1) * 255
        self.flip = splits.flip and train
        self.padding = splits.crop_padding if train else 0
        # Keeping the uint8 images on the target device makes every batch a cheap slice.
        self.images = arrays.images.to(self.device)
        self.labels = arrays.labels.to(self.device)

    def __len__(self) -> int:
        n = len(self.arrays)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.arrays)
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        mine = slice(self.rank, None, self.world_size)  # this rank's share of every global batch
        # This rank's positions of every batch; the batch after the current one is fetched ahead (for a streamed
        # image folder, decoded by a background thread while the current batch trains).
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size][mine] for i in range(len(self))]
        with _Prefetcher(self.images, batches, ahead=isinstance(self.images, LazyImages)) as fetched:
            for i, x in enumerate(fetched):
                # The augmentation is drawn for the whole global batch (in batch order, on this thread), so every
                # rank consumes the generator alike and the ranks together see exactly one process's batch.
                draws = self._draws(min(self.batch_size, n - i * self.batch_size)) if self.train else {}
                idx = batches[i].to(self.device)
                if x.device != self.device:
                    x = x.to(self.device, non_blocking=True)
                if self.train:
                    x = self._augment(x, {k: v[mine].to(self.device) for k, v in draws.items()})
                x = (x.float() - self.mean) / self.std
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, self.labels[idx]

    def _draws(self, b: int) -> dict[str, torch.Tensor]:
        draws = {}
        if self.padding:
            draws["dy"] = torch.randint(0, 2 * self.padding + 1, (b,), generator=self.generator)
            draws["dx"] = torch.randint(0, 2 * self.padding + 1, (b,), generator=self.generator)
        if self.flip:
            draws["mirror"] = torch.rand(b, generator=self.generator) < 0.5
        return draws

    def _augment(self, x: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        b, _, h, w = x.shape
        if self.padding:
            p = self.padding
            padded = torch.nn.functional.pad(x, (p, p, p, p))  # [B, C, H+2p, W+2p], zeros
            dy, dx = draws["dy"], draws["dx"]
            rows = (dy[:, None] + torch.arange(h, device=self.device))[:, None, :, None]  # [B, 1, H, 1]
            cols = (dx[:, None] + torch.arange(w, device=self.device))[:, None, None, :]  # [B, 1, 1, W]
            batch = torch.arange(b, device=self.device)[:, None, None, None]
            chans = torch.arange(x.shape[1], device=self.device)[None, :, None, None]
            x = padded[batch, chans, rows, cols]
        if self.flip:
            x = torch.where(draws["mirror"][:, None, None, None], x.flip(-1), x)
        return x

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class _Prefetcher:
    """Yields ``images[positions]`` for each batch; with ``ahead`` the next batch is fetched by a background
    thread while the caller works on the current one (in-memory images are a cheap slice: no thread)."""

    def __init__(self, images: torch.Tensor | LazyImages, batches: list[torch.Tensor], ahead: bool) -> None:
        self.images, self.batches = images, batches
        self.pool = ThreadPoolExecutor(max_workers=1) if ahead else None

    def __enter__(self) -> Iterator[torch.Tensor]:
        return self._fetch()

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _fetch(self) -> Iterator[torch.Tensor]:
        if self.pool is None:
            for positions in self.batches:
                yield self.images[positions.to(self.images.device)]
            return
        pending = self.pool.submit(self.images.__getitem__, self.batches[0]) if self.batches else None
        for i in range(len(self.batches)):
            current = pending.result()
            if i + 1 < len(self.batches):
                pending = self.pool.submit(self.images.__getitem__, self.batches[i + 1])
            yield current


def subset(arrays: Arrays, n: int) -> Arrays:
    """First ``n`` examples (0 = all)."""
    return arrays if n <= 0 else arrays.take(slice(0, n))


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """Encode a uint8 tensor in the idx format (used by tests to write MNIST-format files)."""
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


def cifar_batch_bytes(images: torch.Tensor, labels: torch.Tensor, label_key: bytes) -> bytes:
    """Pickle a CIFAR-format batch (used by tests to write CIFAR-format files)."""
    buf = io.BytesIO()
    pickle.dump({b"data": images.reshape(len(images), -1).numpy(), label_key: labels.tolist()}, buf)
    return buf.getvalue()


def data_of_checkpoint(ckpt: dict, data_dir: str | None = None) -> DataSplits:
    """The data set (and validation split) a checkpoint was trained with, read from its saved config."""
    cfg = ckpt.get("config") or {}
    return load_dataset(
        cfg.get("dataset", "fashion-mnist"),
        data_dir or cfg.get("data_dir"),
        cfg.get("val_size", 5000),
        image_size=cfg.get("image_size", 224),
    )
