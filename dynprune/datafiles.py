"""Data files on disk: where they are looked up, how they are verified (size, md5) and downloaded, and the
errors a missing or corrupt file raises (each naming the file and what was expected)."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

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


def download_file(url: str, dest: Path, timeout: float) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as fh:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            fh.write(chunk)
    tmp.replace(dest)  # atomic: a half-written download never looks like a data file


def missing_message(folder: Path, missing: list[RemoteFile], why: str) -> str:
    names = ", ".join(f"{f.name} (md5 {f.md5})" for f in missing)
    return (
        f"data set files not found in {folder} and {why}: expected {names}; "
        f"put them there or point --data-dir / ${ENV_VAR} at their parent folder"
    )
