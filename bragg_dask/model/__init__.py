"""The simulator as a differentiable model: :class:`Model` (a ``torch.nn.Module`` whose image is a function
of named parameters, :data:`PARAMETERS`), the losses against a measured image (:mod:`.losses`), their
gradient tile by tile, on a cluster (:func:`loss_and_grad`), and a fit (:func:`fit`)."""

from __future__ import annotations

from bragg_dask.model.fit import fit
from bragg_dask.model.losses import least_squares, poisson_nll
from bragg_dask.model.module import Model
from bragg_dask.model.parallel import loss_and_grad
from bragg_dask.model.start import PARAMETERS

__all__ = ["PARAMETERS", "Model", "fit", "least_squares", "loss_and_grad", "poisson_nll"]
