"""Pure torch physics of nanoBragg: no Dask, no Zarr, no file I/O."""
