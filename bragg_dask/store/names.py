"""The names of a store's arrays and statistics (part of :mod:`bragg_dask.store`, which re-exports them)."""

#: the image arrays, ``(frame, slow, fast)``: float photons/pixel, and the int and noise ADU images
FLOAT, INT, NOISE = "float", "int", "noise"
STAT_FIELDS = ("sum", "sumsq", "n", "max", "argmax_slow", "argmax_fast", "sum_2", "sum_3", "sumsq_2", "sumsq_3")
FRAME_STATS = ("max_I", "max_slow", "max_fast", "mean", "rms", "rmsd", "int_scale")
#: a dataset of ``--vary --labels bragg``: each frame's Bragg photons alone (before background, PSF, noise)
BRAGG = "bragg"
