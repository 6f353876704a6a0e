# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# Keep the config in one place: the server command reads AISYSTANT_INI.
export AISYSTANT_INI ?= development.ini

.PHONY: install run test bench bench-profile simulator notebook clean

$(BIN)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/aisystant-server migrate
	$(BIN)/aisystant-server serve

# Most tests wait on real processes (servers, workers, kernels): three at once keep two
# cores busy. `make test TEST_PROCESSES=0` runs them one after the other.
TEST_PROCESSES ?= 3

test: install
	$(BIN)/python -m pytest -n $(TEST_PROCESSES)

simulator: install
	$(BIN)/aisystant-server simulator

# JupyterLab on notebooks/, opening getting-started.ipynb, against the server of `make run`
# (AISYSTANT_URL, when set, points the notebooks elsewhere). JupyterLab refuses to start as
# root unless told, and containers often run as root.
notebook: install
	cd notebooks && AISYSTANT_URL="$${AISYSTANT_URL:-http://localhost:$${PORT:-3001}}" \
		$(abspath $(BIN))/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) getting-started.ipynb

# Issue 10's benchmarks (bench/README.md): `make bench BENCH_ARGS="--quick"`; the original
# Node backend beside ours with --original PATH or AISYSTANT_BENCH_ORIGINAL.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Where the server's CPU goes under the bench load (py-spy): `make bench-profile BENCH_ARGS="--only reads"`.
bench-profile: install
	$(BIN)/python bench/profile_server.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data *.egg-info
