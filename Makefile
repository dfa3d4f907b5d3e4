# Two entry points: `make demo` and `make test`. Each builds .venv from the pinned requirements.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REQS := requirements/base.txt requirements/export.txt requirements/dev.txt requirements/nodeps.txt requirements/scale.txt requirements/mcu.txt
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test lint style venv clean system-deps mutation plant-bugs

venv: $(STAMP)

$(STAMP): $(REQS) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements/base.txt -r requirements/export.txt -r requirements/dev.txt -r requirements/scale.txt -r requirements/mcu.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements/nodeps.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# style and import layers (seconds); `lint` adds the strict typing of the public API (the slowest
# check), which `make test` runs as a test beside the others (tests/test_architecture.py)
style: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/lint-imports

lint: style
	# the public API, strictly typed (no cache: mypy 1.18 cannot serialize some torch types)
	$(BIN)/python -m mypy --strict --follow-imports=silent --ignore-missing-imports \
		--cache-dir=/dev/null src/robustedge/api

# ARM emulation + a loopback sshd for the device tests: installed when root (CI is root).
system-deps:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/install-system-deps.sh; \
	else echo "not root: skipping scripts/install-system-deps.sh (QEMU/SSH tests will skip)"; fi

# loadgroup: modules sharing an expensive fixture run on one worker (tests/conftest.py)
# PYTHONDONTWRITEBYTECODE= : bytecode is cached even where the environment turns it off, so
# that the suite's hundreds of Python processes do not each compile robustedge again
test: style system-deps
	PYTHONDONTWRITEBYTECODE= OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist load $(PYTEST_ARGS)

demo: $(STAMP)
	@bash scripts/demo-board.sh $(BIN)/robustedge
	OMP_NUM_THREADS=1 $(BIN)/robustedge run recipes/digits.yaml --out $(DEMO_OUT)
	$(BIN)/robustedge report $(DEMO_OUT) --out $(DEMO_OUT)/report.html --title "robustedge demo: digits"

# Mutation testing of the core modules (mutmut, its own venv; ~45 min on 2 cores): too slow for
# `make test`. Writes benchmarks/measured/mutation.json; MODULES="pgd prox" for a subset.
mutation: $(STAMP)
	bash scripts/mutation.sh $(MODULES)

# Realistic bugs planted one at a time in a copy of HEAD, each against its related tests
# (benchmarks/bugs.py; ~15 min on 2 cores). Writes benchmarks/measured/planted_bugs.json;
# BUGS="admm-dual-sign sha256-prefix" for a subset.
plant-bugs: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bugs.py $(if $(BUGS),--only $(BUGS))

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
