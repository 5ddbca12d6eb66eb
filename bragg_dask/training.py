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

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from bragg_dask import store as zstore

__all__ = ["StoreDataset", "StoreStream", "collate", "sample"]


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
    ``i``-th contiguous block of frames (every frame exactly once over the workers)."""

    def __init__(self, path: str, image: str = zstore.FLOAT, labels: bool = True, transform: Callable | None = None):
        self.path, self.image, self.labels, self.transform = path, image, labels, transform
        self.n = zstore.frame_count(path)
        self.bragg = labels and zstore.BRAGG in zstore.image_arrays(path)

    def frames(self) -> range:
        """This worker's frames (all of them outside a worker)."""
        info = get_worker_info()
        if info is None:
            return range(self.n)
        per = -(-self.n // info.num_workers)
        return range(info.id * per, min(self.n, (info.id + 1) * per))

    def __iter__(self) -> Iterator[dict]:
        for k in self.frames():
            out = sample(self.path, k, self.image, self.labels, self.bragg)
            yield self.transform(out) if self.transform is not None else out


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
    first = images[0]
    if get_worker_info() is None:
        return torch.stack(images)
    shared = first.new_empty((len(images), *first.shape)).share_memory_()
    return torch.stack(images, out=shared)
