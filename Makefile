# trainplan: `make demo` runs the main job on the built-in default task, `make test` the whole
# test suite. Both create .venv on first use (CPU torch first when no torch is present, so pip
# does not fetch a CUDA build on a machine without a GPU) and build DeepSpeed's C++ Adam op into
# .venv/torch_extensions once (about 100 s on a 2-core CPU), so no trial pays for that build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup browser demo test bench clean

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || { echo "installing $(TORCH_SPEC) (CPU build where available)"; $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; }
	@$(BIN)/python -m pip install -q -e ".[test]"
	@touch $@

# Instant when the op is built already; a failed build only warns (the first trial retries it).
setup: $(BIN)/.installed
	@$(BIN)/python -c "from trainplan.runners._opcache import main; main()"

# Headless Chromium for the report tests (Debian package; needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing chromium for the report tests"; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: setup
	@bash scripts/demo.sh

test: setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/plan_speed.py

clean:
	rm -rf $(VENV) runs build *.egg-info
