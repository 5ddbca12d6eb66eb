"""The Zarr v3 store of a run: one group, images chunked by tile, per-frame metadata and statistics.

Layout (docs/architecture.md section 6)::

    float        (frame, slow, fast) float32 photons/pixel, one chunk per tile (a dataset: shards of
                 several frames, their tiles its inner chunks; see whole_frames, layout.shard_frames)
    int, noise   (frame, slow, fast) uint16, optional: the C program's int and noisy images
    tiles_done   (frame, tile_slow, tile_fast) bool, written by each tile's task after its chunk
    tile_stats   (frame, tile_slow, tile_fast, stat) float64 partial sums of each tile
    frame, phi_deg; x_mm; y_mm   coordinates: (frame,); (fast,); (slow,) pixel centres in mm
    phi0_deg, orientation, noise_seed                    per-frame metadata
    max_I, max_slow, max_fast, mean, rms, rmsd, int_scale  per-frame statistics
    attrs        "bragg_dask": configuration (JSON), fingerprint, geometry, units, version, parity,
                 "complete" (false until the run has finished)

Every array has ``dimension_names``, ``units`` and ``long_name`` (:data:`LABELS`), and the image
arrays name their coordinates; the group records the detector as a pyFAI PONI (:func:`poni`).  So
``xarray.open_zarr(path)`` gives labelled arrays; nothing from this package is needed to read a store.
All-zero chunks are legitimate data: completeness is
``tiles_done``, never the presence of a chunk.

Safety (see :func:`open_store`):

* one writer: a run holds ``flock`` on ``<store>/.bragg_dask.lock`` (pid, host and start time
  inside) until it ends; a second run on the store is refused.  The kernel drops the lock of a
  killed run, so its stale lock file is simply taken over.
* ``--overwrite`` replaces only a bragg_dask store (or an empty folder), never other content; the
  new store is built beside the old one and swapped in once the run has started, so there is no
  moment with neither.
* a tile is marked done only after its chunk and statistics are written and ``fsync``-ed (zarr
  writes each chunk to a temporary file renamed into place); ``complete`` is false while a run
  writes.  A write fault (disk full, read-only) ends the run with a :class:`StoreError`.
"""

from __future__ import annotations

import logging
import warnings

from bragg_dask.store.chunks import OpenStore, fsync_enabled, fsync_path, opened, sync_chunk
from bragg_dask.store.faults import StoreError, note_fault, store_fault
from bragg_dask.store.integrity import DamagedChunk, check_metadata, damage_error, looks_like_store
from bragg_dask.store.labels import frame_labels
from bragg_dask.store.layout import (
    FORMAT_VERSION,
    IMAGE_COORDS,
    LABELS,
    consolidate,
    ensure_image_array,
    poni,
    run_fingerprint,
    run_record,
    store_attrs,
)
from bragg_dask.store.lock import LOCK_NAME
from bragg_dask.store.names import BRAGG, FLOAT, FRAME_STATS, INT, NOISE, STAT_FIELDS
from bragg_dask.store.reading import (
    FrameRecord,
    StoreFrame,
    frame_count,
    frame_record,
    frame_shape,
    frame_tiles,
    frames_phi0_deg,
    image_arrays,
    read_frame,
    store_metadata,
    tile_stats_rows,
    tiles_done,
)
from bragg_dask.store.response import MODEL_LABEL, drop_response, record_response, sync_response
from bragg_dask.store.verify import Problem, Scan, check_frames, scan, usable_tiles
from bragg_dask.store.writing import (
    ReflectionWriter,
    drop_frame_images,
    frames_per_shard,
    read_tile_image,
    stats_from_row,
    stats_row,
    whole_frames,
    whole_shards,
    write_frame_image,
    write_frame_images,
    write_frame_metadata,
    write_frames_stats,
    write_reflections,
    write_tile_image,
    write_tiles,
)

log = logging.getLogger(__name__)
# zarr lists a group's folder in its own event-loop thread (consolidating, listing arrays) and warns there
# about the files beside the arrays that this package keeps (the lock): not for the user's eyes
warnings.filterwarnings("ignore", message=r"Object at \.bragg_dask\.", category=UserWarning)

__all__ = [
    "BRAGG",
    "check_frames",
    "check_metadata",
    "consolidate",
    "damage_error",
    "DamagedChunk",
    "drop_frame_images",
    "drop_response",
    "ensure_image_array",
    "FLOAT",
    "FORMAT_VERSION",
    "frame_count",
    "frame_shape",
    "frame_record",
    "FRAME_STATS",
    "frame_tiles",
    "FrameRecord",
    "frames_phi0_deg",
    "fsync_enabled",
    "fsync_path",
    "image_arrays",
    "IMAGE_COORDS",
    "INT",
    "is_store",
    "LABELS",
    "LOCK_NAME",
    "MODEL_LABEL",
    "looks_like_store",
    "mark_complete",
    "NOISE",
    "note_fault",
    "open_or_create",
    "open_store",
    "opened",
    "OpenStore",
    "OtherConfiguration",
    "poni",
    "Problem",
    "read_frame",
    "read_tile_image",
    "record_response",
    "run_fingerprint",
    "run_record",
    "scan",
    "Scan",
    "STAT_FIELDS",
    "stats_from_row",
    "stats_row",
    "store_attrs",
    "store_fault",
    "store_metadata",
    "stored_noise_seed",
    "stored_tile_shape",
    "StoreError",
    "StoreFrame",
    "StoreSession",
    "sync_chunk",
    "sync_response",
    "tile_stats_rows",
    "tiles_done",
    "usable_tiles",
    "whole_frames",
    "whole_shards",
    "frames_per_shard",
    "write_frame_image",
    "write_frame_images",
    "frame_labels",
    "write_frame_metadata",
    "write_reflections",
    "ReflectionWriter",
    "write_frames_stats",
    "write_tile_image",
    "write_tiles",
]

from bragg_dask.store.session import (  # noqa: E402
    OtherConfiguration,
    StoreSession,
    is_store,
    mark_complete,
    open_or_create,
    open_store,
    stored_noise_seed,
    stored_tile_shape,
)
