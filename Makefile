# The two commands of the README:
#   make run    simulate an image on the embedded local Dask cluster into demo/demo.zarr
#   make test   run the whole test suite
# Both create the virtual environment .venv when it is missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test venv clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@mkdir -p demo
	$(BIN)/python examples/make_demo_inputs.py demo
	cd demo && ../$(BIN)/bragg-dask -hkl demo.hkl -cell 79.1 79.1 37.9 90 90 90 -N 10 -lambda 1.0 \
		-distance 200 -pixel 0.172 -detpixels 1024 -oversample 1 -misset 10 20 30 \
		-mosaic_spread 0.1 -mosaic_domains 4 -phi 0 -osc 0.2 -phisteps 2 \
		-nonoise -nopgm -floatfile demo.bin -intfile demo.img --zarr demo.zarr --overwrite

test: $(STAMP)
	$(BIN)/ruff check bragg_dask tests benchmarks
	$(BIN)/ruff format --check bragg_dask tests benchmarks
	$(BIN)/mypy bragg_dask
	$(BIN)/python -m pytest -q

clean:
	rm -rf demo
