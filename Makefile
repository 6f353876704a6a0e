# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# Keep the config in one place: the server command reads AISYSTANT_INI.
export AISYSTANT_INI ?= development.ini

.PHONY: install run test bench bench-profile simulator notebook clean

# One install at a time: the README starts `make simulator` and `make run` side by side, and
# two installs into one new .venv broke it (`No module named pip`). The second waits for the
# first, then finds the install done.
$(BIN)/.installed: setup.cfg pyproject.toml
	@if ! mkdir $(VENV).lock 2>/dev/null; then \
		echo "make: another make is installing $(VENV), waiting (if none is, remove $(VENV).lock)" >&2; \
		until mkdir $(VENV).lock 2>/dev/null; do sleep 2; done; \
	fi; \
	trap 'rmdir $(VENV).lock' EXIT; trap 'exit 130' INT TERM; \
	if [ -f $@ ] && [ $@ -nt setup.cfg ] && [ $@ -nt pyproject.toml ]; then exit 0; fi; \
	set -ex; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --upgrade pip; \
	$(BIN)/python -m pip install --quiet -e '.[dev]'; \
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
	rm -rf $(VENV) $(VENV).lock data *.egg-info
