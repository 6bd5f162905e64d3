"""Data sets in memory (``Arrays``: uint8 images and int64 labels) and the file formats they are read from:
idx (MNIST, Fashion-MNIST), the CIFAR pickled batches, and a procedural set for tests; the writers make such
files for tests."""

from __future__ import annotations

import functools
import gzip
import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .datafiles import DataError
from .imagefolder import LazyImages


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


def read_mnist_like(folder: Path) -> tuple[Arrays, Arrays]:
    def split(prefix: str) -> Arrays:
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz").unsqueeze(1)  # [N, 1, 28, 28]
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").long()
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{folder}: {prefix} has {images.shape[0]} images but {labels.shape[0]} labels")
        return Arrays(images, labels)

    return split("train"), split("t10k")


def unpickle_batch(blob: bytes) -> dict:
    # The CIFAR batches are pickled dicts of bytes keys -> numpy arrays / lists; only read files whose md5
    # matched the published one (checked before this is called).
    return pickle.loads(blob, encoding="bytes")


def read_cifar_batches(blobs: list[bytes], label_key: bytes) -> Arrays:
    """Decode CIFAR python batches: dict with b'data' uint8 [N, 3072] (RGB planes) and the label list."""
    images, labels = [], []
    for blob in blobs:
        entry = unpickle_batch(blob)
        data = torch.as_tensor(entry[b"data"], dtype=torch.uint8)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(torch.as_tensor(entry[label_key], dtype=torch.long))
    return Arrays(torch.cat(images), torch.cat(labels))


def cifar_reader(archive: str, inner: str, train: list[str], test: list[str], label_key: bytes):
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


def synthetic_arrays(n_train: int = 12000, n_test: int = 1000, seed: int = 0) -> tuple[Arrays, Arrays]:
    """Procedural 10-class 1x28x28 images: each class is an oriented grating with its own frequency.

    Only for tests and smoke runs: learnable in a few hundred steps, no files needed. Made once per process (it
    took most of a tiny run's time); every call gets its own copy of the tensors.
    """
    train, test = _synthetic(n_train, n_test, seed)
    return _copy(train), _copy(test)


def _copy(arrays: Arrays) -> Arrays:
    assert isinstance(arrays.images, torch.Tensor)
    return Arrays(arrays.images.clone(), arrays.labels.clone())


@functools.lru_cache(maxsize=4)
def _synthetic(n_train: int, n_test: int, seed: int) -> tuple[Arrays, Arrays]:
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


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """Encode a uint8 tensor in the idx format (used by tests to write MNIST-format files)."""
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


def cifar_batch_bytes(images: torch.Tensor, labels: torch.Tensor, label_key: bytes) -> bytes:
    """Pickle a CIFAR-format batch (used by tests to write CIFAR-format files)."""
    buf = io.BytesIO()
    pickle.dump({b"data": images.reshape(len(images), -1).numpy(), label_key: labels.tolist()}, buf)
    return buf.getvalue()
