"""Reading a store for training (``bragg_dask.training``): PyTorch datasets of a store's frames and labels.

* :class:`StoreDataset`: map-style, frame ``k``'s image and labels by index (a ``transform`` hook);
* :class:`StoreStream`: iterable, the frames in store order, split between a ``DataLoader``'s workers in
  contiguous blocks (each worker reads its own run of chunk files).

Each process opens the store itself (a ``DataLoader``'s workers included); no Dask is needed to read, and
every chunk read is checked against its checksum (a damaged frame is a one-line error naming it).  A sample
is a dict: ``image`` (a float32 tensor ``(slow, fast)``, or ``(panel, slow, fast)``), ``frame``, and the
frame's labels (:func:`bragg_dask.store.frame_labels`: ``reflections``, ``orientation``,
``reciprocal_basis``, ``vary``...; numpy arrays); :func:`collate` batches them (tables of any length).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from bragg_dask import store as zstore

__all__ = ["StoreDataset", "StoreStream", "as_batch", "collate", "sample"]


def sample(path: str, k: int, image: str = zstore.FLOAT, labels: bool = True, bragg: bool | None = None) -> dict:
    """Frame ``k`` of the store at ``path``: ``{"image": tensor, "frame": k, ...labels}`` (``image``: the
    array read, ``float``, ``int`` or ``noise``; ``labels``: with the frame's labels; ``bragg``: with the
    label image of a ``--labels bragg`` store, None: where the store has one)."""
    out = zstore.frame_labels(path, k) if labels else {"frame": k}
    shape = zstore.frame_shape(path)
    pixels = torch.empty(shape, dtype=torch.float32)
    zstore.read_frame(path, k, image, out=pixels.numpy())  # decoded straight into the tensor
    out["image"] = pixels
    if bragg is None:
        bragg = labels and zstore.BRAGG in zstore.image_arrays(path)
    if bragg:
        dry = torch.empty(shape, dtype=torch.float32)
        zstore.read_frame(path, k, zstore.BRAGG, out=dry.numpy())
        out["bragg"] = dry
    return out


class StoreDataset(Dataset):
    """Map-style: ``dataset[k]`` is :func:`sample` of frame ``k`` (then ``transform(sample)`` where given)."""

    def __init__(self, path: str, image: str = zstore.FLOAT, labels: bool = True, transform: Callable | None = None):
        self.path, self.image, self.labels, self.transform = path, image, labels, transform
        self.n = zstore.frame_count(path)
        self.shard = zstore.frames_per_shard(zstore.opened(path, "r"))
        self.bragg = labels and zstore.BRAGG in zstore.image_arrays(path)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int) -> dict:
        if not -self.n <= k < self.n:
            raise IndexError(f"frame {k} not in a store of {self.n}")
        out = sample(self.path, k % self.n, self.image, self.labels, self.bragg)
        return self.transform(out) if self.transform is not None else out


class StoreStream(IterableDataset):
    """Iterable: the frames in store order; in a ``DataLoader`` of ``W`` workers, worker ``i`` reads the
    ``i``-th contiguous block of frames (every frame exactly once over the workers).

    ``batch_size``: yield batches of that many frames (a worker's last one smaller) as :func:`collate` makes
    them, each frame decoded straight into the batch's tensor (in shared memory in a worker: no copy on the
    way), for a ``DataLoader(stream, batch_size=None, collate_fn=as_batch)``; ``transform`` then applies to
    each batch."""

    def __init__(
        self,
        path: str,
        image: str = zstore.FLOAT,
        labels: bool = True,
        transform: Callable | None = None,
        batch_size: int | None = None,
    ):
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size: a whole number >= 1 or None, got {batch_size!r}")
        self.path, self.image, self.labels, self.transform = path, image, labels, transform
        self.batch_size = batch_size
        self.n = zstore.frame_count(path)
        self.shard = zstore.frames_per_shard(zstore.opened(path, "r"))
        self.bragg = labels and zstore.BRAGG in zstore.image_arrays(path)

    def frames(self) -> range:
        """This worker's frames (all of them outside a worker): a contiguous block of whole shards where
        the store has at least a shard per worker (no two workers read one shard file), else of frames."""
        info = get_worker_info()
        if info is None:
            return range(self.n)
        g = -(-self.n // max(1, self.shard))  # shards
        unit = self.shard if g >= info.num_workers else 1
        per = -(-self.n // unit // info.num_workers) * unit if unit > 1 else -(-self.n // info.num_workers)
        return range(min(self.n, info.id * per), min(self.n, (info.id + 1) * per))

    def __iter__(self) -> Iterator[dict]:
        mine = self.frames()
        if self.batch_size:
            for i in range(0, len(mine), self.batch_size):
                out = self._batch(list(mine[i : i + self.batch_size]))
                yield self.transform(out) if self.transform is not None else out
            return
        for k in mine:
            out = sample(self.path, k, self.image, self.labels, self.bragg)
            yield self.transform(out) if self.transform is not None else out

    def _batch(self, ks: list[int]) -> dict:
        shape = (len(ks), *zstore.frame_shape(self.path))
        out: dict = {"frame": torch.tensor(ks), "image": _batch_tensor(shape)}
        for j, k in enumerate(ks):
            zstore.read_frame(self.path, k, self.image, out=out["image"][j].numpy())
        if self.bragg:
            out["bragg"] = _batch_tensor(shape)
            for j, k in enumerate(ks):
                zstore.read_frame(self.path, k, zstore.BRAGG, out=out["bragg"][j].numpy())
        if self.labels:
            labels = [zstore.frame_labels(self.path, k) for k in ks]
            out.update({key: [lab[key] for lab in labels] for key in labels[0] if key != "frame"})
        return out


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of ``shape``, in shared memory in a ``DataLoader``'s worker (made there, as torch's
    own collate makes its batches: nothing copied when it is sent to the main process)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    elem = torch.empty(0, dtype=torch.float32)
    storage = elem._typed_storage()._new_shared(int(np.prod(shape)), device=elem.device)
    return elem.new(storage).resize_(*shape)


def collate(samples: list[dict]) -> dict:
    """A batch for a ``DataLoader`` (``collate_fn=collate``): ``image`` (and ``bragg``) stacked ``(B, ...)``,
    ``frame`` a tensor, every label a list (a frame's reflection table has its own length).  In a worker
    the images are stacked straight into shared memory (no second copy on their way to the main process)."""
    out: dict = {"frame": torch.tensor([s["frame"] for s in samples])}
    for key in ("image", "bragg"):
        if key in samples[0]:
            out[key] = _stack([s[key] for s in samples])
    for key in samples[0]:
        if key not in out:
            out[key] = [s[key] for s in samples]
    return out


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    if get_worker_info() is None:
        return torch.stack(images)
    return torch.stack(images, out=_batch_tensor((len(images), *images[0].shape)))


def as_batch(batch: dict) -> dict:
    """The ``collate_fn`` for a :class:`StoreStream` of batches (``DataLoader(stream, batch_size=None,
    collate_fn=as_batch)``): the batch as the stream made it (torch's default would turn every label array
    into a tensor of its own, each sent through shared memory apart)."""
    return batch
