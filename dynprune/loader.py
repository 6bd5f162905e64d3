"""Batches of a data split: normalised float tensors from in-memory uint8 arrays (or image files decoded per
batch), augmented per batch, in a seeded order that a checkpoint saves and a resume restores."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from .data import DataSplits
from .formats import Arrays
from .imagefolder import LazyImages


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
