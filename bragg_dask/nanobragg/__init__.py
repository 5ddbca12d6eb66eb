"""The C program's command line, as it reads it: its variables (:mod:`.params`), how each flag's values
are read and checked (:mod:`.values`, :mod:`.handlers`), and the runs it would get wrong or never finish
(:mod:`.feasibility`).  The flag table and the derivation of a simulation are
:mod:`bragg_dask.nanobragg.args` and :mod:`bragg_dask.nanobragg.resolve`.
"""
