"""Run bragg_dask on a SLURM cluster through dask-jobqueue (pip install dask-jobqueue).

    python deploy/slurm-dask-jobqueue.py   # edit the queue, cores and memory below first

Each SLURM job is one single-threaded CPU worker; the store must be on a shared filesystem.
GPU workers instead: one GPU per job, a single-threaded worker (cores=1) on a few booked CPUs (job_cpu),
and a GPU resource for the tile tasks to ask for::

    SLURMCluster(queue="gpu", cores=1, processes=1, job_cpu=4, memory="32GB", walltime="02:00:00",
                 job_extra_directives=["--gres=gpu:1"], worker_extra_args=["--resources", "GPU=1"])
    bragg_dask.simulate(sim, store=..., client=client, device="cuda", dtype="float32")
"""

from dask_jobqueue import SLURMCluster
from distributed import Client

import bragg_dask

cluster = SLURMCluster(queue="normal", cores=1, processes=1, memory="4GB", walltime="02:00:00",
                       job_script_prologue=["export OMP_NUM_THREADS=1"])
cluster.scale(jobs=32)
client = Client(cluster)
print("dashboard:", client.dashboard_link)
sim = bragg_dask.simulation_from_args(
    ["-hkl", "lyso.hkl", "-cell", "79.1", "79.1", "37.9", "90", "90", "90", "-N", "10", "-lambda", "1.0",
     "-distance", "200", "-pixel", "0.172", "-detpixels_x", "2463", "-detpixels_y", "2527", "-oversample", "1"])
bragg_dask.simulate(sim, store="/shared/run.zarr", client=client, tile=256)
client.close()
cluster.close()
