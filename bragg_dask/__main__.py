import sys

from bragg_dask.cli import main

sys.exit(main())
