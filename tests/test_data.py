from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from helpers import DATASET

from dynprune import data as D
from dynprune import formats
from dynprune.loader import BatchLoader

#: (training images, test images per class) of the full data set and of the sample shipped in the package
PUBLISHED = {"fashion-mnist": (60000, 1000), "fashion-mnist-sample": (6000, 100)}


def test_real_fashion_mnist_loads_with_fixed_val_split(fmnist, data_root):
    n_train, per_class = PUBLISHED[DATASET]
    assert len(fmnist.train) == n_train - 5000 and len(fmnist.val) == 5000 and len(fmnist.test) == 10 * per_class
    assert fmnist.train.images.dtype == torch.uint8
    assert fmnist.train.images.shape[1:] == (1, 28, 28)
    assert set(fmnist.test.labels.unique().tolist()) == set(range(10))
    # Class balance of the real test set: 1,000 per class.
    assert torch.bincount(fmnist.test.labels).tolist() == [per_class] * 10
    again = D.load_dataset(DATASET, data_root, download=False)
    assert torch.equal(again.val.labels, fmnist.val.labels), "validation split must be the same every time"


def test_loader_normalises_and_augments(fmnist):
    loader = BatchLoader(D.subset(fmnist.train, 512), fmnist, 256, train=True, seed=3)
    x, y = next(iter(loader))
    assert x.shape == (256, 1, 28, 28) and y.shape == (256,)
    assert abs(x.mean().item()) < 0.3 and 0.7 < x.std().item() < 1.3
    plain = BatchLoader(D.subset(fmnist.train, 512), fmnist, 256, train=False)
    xp, _ = next(iter(plain))
    assert not torch.equal(x, xp)
    assert len(plain) == 2 and len(BatchLoader(D.subset(fmnist.val, 300), fmnist, 256, train=False)) == 2


def test_loader_state_restores_batch_order(fmnist):
    a = BatchLoader(D.subset(fmnist.train, 1024), fmnist, 128, train=True, seed=7)
    next(iter(a))
    state = a.state_dict()
    first = [x for x, _ in a]
    a.load_state_dict(state)
    second = [x for x, _ in a]
    assert all(torch.equal(p, q) for p, q in zip(first, second, strict=True))


def _write_mnist(folder: Path, n_train: int = 20, n_test: int = 10) -> None:
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(formats.idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(formats.idx_bytes(labels)))


def test_mnist_reader_on_written_idx_files(tmp_path):
    _write_mnist(tmp_path / "mnist")
    train, test = formats.read_mnist_like(tmp_path / "mnist")
    assert train.images.shape == (20, 1, 28, 28) and test.labels.tolist() == list(range(10))
    # The loader verifies md5s: these home-made files are not the published ones and must be refused.
    with pytest.raises(D.DataError, match="size .* expected 9912422"):
        D.load_dataset("mnist", tmp_path, download=False)


def test_cifar_reader_on_written_batches_and_tar(tmp_path):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {n: (torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4) % 10) for n in names}
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for n, (img, lab) in batches.items():
            blob = formats.cifar_batch_bytes(img, lab, b"labels")
            info = tarfile.TarInfo(f"cifar-10-batches-py/{n}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    read = D.DATASETS["cifar10"].reader
    train, test = read(tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 4
    assert torch.equal(train.images[:4], batches["data_batch_1"][0])
    assert torch.equal(test.images, batches["test_batch"][0])
    # CIFAR-100 layout: one 'train' and one 'test' pickle with fine labels, from the extracted folder.
    inner = tmp_path / "c100" / "cifar-100-python"
    inner.mkdir(parents=True)
    for n in ("train", "test"):
        img, lab = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8), torch.arange(6) * 13
        (inner / n).write_bytes(formats.cifar_batch_bytes(img, lab, b"fine_labels"))
    train100, _ = D.DATASETS["cifar100"].reader(tmp_path / "c100")
    assert train100.labels.tolist() == [0, 13, 26, 39, 52, 65]


def test_corrupted_file_is_rejected_by_name(tmp_path, data_root):
    spec = D.DATASETS[DATASET]
    folder = tmp_path / spec.folder
    shutil.copytree(data_root / spec.folder, folder)
    victim = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0xFF  # same size, different content
    victim.write_bytes(bytes(raw))
    with pytest.raises(D.DataError, match="t10k-labels-idx1-ubyte.gz: md5"):
        D.ensure_files(spec, tmp_path, download=False)  # the check load_dataset runs on every data set's files


def test_missing_files_name_folder_files_and_md5(tmp_path):
    with pytest.raises(D.DataError) as err:
        D.load_dataset("fashion-mnist", tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "fashion-mnist") in msg
    assert "train-images-idx3-ubyte.gz (md5 8d4fb7e6c68d591d4c3dfef9ec88bf0d)" in msg


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path))
    assert D.resolve_data_dir(None) == tmp_path
    assert D.resolve_data_dir("elsewhere") == Path("elsewhere")
    monkeypatch.delenv(D.ENV_VAR)
    assert D.resolve_data_dir(None) == Path("data")


def test_unknown_dataset_lists_known():
    with pytest.raises(
        D.DataError, match="known: fashion-mnist, fashion-mnist-sample, mnist, cifar10, cifar100, synthetic"
    ):
        D.load_dataset("imagenet")


def test_synthetic_is_learnable_shape():
    splits = D.load_dataset("synthetic", val_size=1000)
    assert splits.train.images.shape[1:] == (1, 28, 28) and splits.num_classes == 10
    assert len(splits.val) == 1000


def test_failed_lookup_leaves_no_empty_folder_behind(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise D.urllib.error.URLError("no network")

    monkeypatch.setattr(D.urllib.request, "urlopen", offline)
    root = tmp_path / "typo" / "data"
    with pytest.raises(D.DataError, match="download failed"):
        D.load_dataset("fashion-mnist", root, download=True)
    assert not (tmp_path / "typo").exists()  # nothing created by the failed lookup is left


def test_only_missing_files_fall_back_to_the_shipped_sample(tmp_path, monkeypatch, data_root):
    def offline(url, *args, **kwargs):
        raise D.urllib.error.URLError("no network")

    monkeypatch.setattr(D.urllib.request, "urlopen", offline)
    name, notice = D.full_or_sample("fashion-mnist", tmp_path, download=True)
    assert name == "fashion-mnist-sample"
    assert notice.startswith(f"no fashion-mnist files in {tmp_path / 'fashion-mnist'} and download failed (")
    assert "\n" not in notice and list(tmp_path.iterdir()) == []  # one line; the failed lookup left nothing
    name, notice = D.full_or_sample("fashion-mnist", tmp_path, download=False)
    assert name == "fashion-mnist-sample" and "and downloads are off, so this run trains on" in notice
    # Data sets without a shipped sample are loaded as named (their missing files are load_dataset's error).
    assert D.full_or_sample("mnist", tmp_path, download=True) == ("mnist", None)
    assert D.full_or_sample("synthetic", tmp_path, download=True) == ("synthetic", None)
    # Files that are there but corrupt are an error, never a reason to train on something else.
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for f in D.DATASETS["fashion-mnist"].files:
        (folder / f.name).write_bytes(b"\0" * 10)
    with pytest.raises(D.DataError, match="train-images-idx3-ubyte.gz: size 10 bytes, expected 26421880"):
        D.full_or_sample("fashion-mnist", tmp_path, download=True)
    if DATASET == "fashion-mnist":  # the full files at hand: used as they are, no notice
        assert D.full_or_sample("fashion-mnist", data_root, download=False) == ("fashion-mnist", None)


def test_an_unreadable_data_file_is_one_line(tmp_path, data_root):
    """A folder where a data file should be (as unreadable as a file without read permission, which root
    reads anyway): a DataError naming it, not an IsADirectoryError traceback."""
    spec = D.DATASETS[DATASET]
    folder = tmp_path / spec.folder
    shutil.copytree(data_root / spec.folder, folder)
    victim = folder / "t10k-labels-idx1-ubyte.gz"
    victim.unlink()
    victim.mkdir()
    with pytest.raises(D.DataError, match="t10k-labels-idx1-ubyte.gz: cannot read this data file"):
        D.verify_file(victim, "0" * 32, None)
    with pytest.raises(D.DataError, match="cannot read this data file"):
        formats.read_idx(victim)


def test_the_synthetic_set_is_made_once_and_each_call_gets_its_own_copy():
    first, _ = formats.synthetic_arrays(200, 50, seed=3)
    first.images[:] = 0  # a caller that writes into its arrays
    again, test = formats.synthetic_arrays(200, 50, seed=3)
    assert int(again.images.max()) > 0 and len(test) == 50
    fresh, _ = formats._synthetic.__wrapped__(200, 50, 3)  # made again from scratch: the same images
    assert torch.equal(again.images, fresh.images) and torch.equal(again.labels, fresh.labels)
