# benchflow — the two commands: `make demo` (run the demo campaign) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-unit bench sim-image clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Runs the demo campaign on the embedded default (simulator, SQLite, ./.benchflow).
demo: install
	$(VENV)/bin/benchflow run deployments/campaigns/demo.yaml

## Runs the whole test suite (unit, integration, end to end).
test: install
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -q -m "not integration and not docker" $(PYTEST_ARGS)

## Measures the load generator and orchestration overhead, several client processes (throughput and the TTFT
## the client adds: bench/clients.py, bench/client_ttft.py, and the loopback floor under it:
## bench/loopback_send.py), the SLO-capacity
## search's interval coverage (bench/capacity.py) and the tuning samplers against an exhaustive optimum
## (bench/tuning.py); the last two run in virtual time. Figures go into README.md and docs/metrics.md.
## GP (Optuna's GPSampler) needs PyTorch: BENCH_TORCH is installed first (2.13.0 is the CPU wheel this
## machine keeps on disk; elsewhere pip downloads it from PyPI). BENCH_TORCH= (empty) skips GP.
BENCH_TORCH ?= torch==2.13.0
bench: install
	$(if $(BENCH_TORCH),$(PY) -m pip install -q '$(BENCH_TORCH)')
	$(PY) bench/run_all.py
	PYTHONPATH=. $(PY) bench/clients.py
	PYTHONPATH=. $(PY) bench/clients.py --dataset 'D(32,128)' --out bench/results/clients_128.json
	PYTHONPATH=. $(PY) bench/client_ttft.py
	PYTHONPATH=. $(PY) bench/client_ttft.py --tokens 8-40 --out bench/results/client_ttft_varied.json
	$(PY) bench/loopback_send.py
	PYTHONPATH=. $(PY) bench/capacity.py
	PYTHONPATH=. $(PY) bench/tuning.py
	PYTHONPATH=. $(PY) bench/traces.py

## Builds benchflow/sim:latest from docker/sim.Dockerfile (BASE_IMAGE=... to change the base;
## OFFLINE=1 installs wheels downloaded on this host, for builds that cannot reach an index).
BASE_IMAGE ?= python:3.11-slim
sim-image:
	bash docker/build-image.sh sim --base-image $(BASE_IMAGE) $(if $(OFFLINE),--offline)

clean:
	rm -rf $(VENV) .benchflow .pytest_cache

## Opt-in: the whole suite on $(XDIST_WORKERS) pytest-xdist workers. Areas with expensive session
## fixtures (docker, deploy, flows, e2e, store) each stay on one worker (tests/conftest.py adds the
## xdist_group marks); everything else is spread. PYTEST_ARGS is passed on as for `make test`.
XDIST_WORKERS ?= 2
.PHONY: test-fast
test-fast: install
	$(PY) -m pytest -q -ra -n $(XDIST_WORKERS) --dist loadgroup $(PYTEST_ARGS)
