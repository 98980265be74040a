# Two commands for a fresh machine: `make demo` (JupyterLab with the quickstart notebook) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch; override with TORCH_SPEC="torch" (or a CUDA build) on a GPU host.
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= demo-output
# JupyterLab for `make demo`: loopback only by default; DEMO_ARGS="--ip=0.0.0.0" to share it
DEMO_ARGS ?= --ip=127.0.0.1
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: install browser ds9 postgres hub-proxy demo demo-cli test test-all clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	# the build hook (setup.py) fetches Aladin Lite (LGPL-3.0) from the npm registry for the
	# offline notebook view; without npm a development install still works, with the CDN view
	CIANNA_OTF_ALLOW_CDN=1 $(BIN)/python -m pip install --quiet -e ".[dev]"
	# an editable install skips data files: put the wheel's enabling config in this environment
	# (jupyter_server's `extension enable` refuses an extension that no config lists yet)
	mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d
	cp jupyter-config/jupyter_server_config.d/cianna_otf_jupyter.json $(VENV)/etc/jupyter/jupyter_server_config.d/
	$(BIN)/python -m cianna_otf_jupyter.fetch_aladin || echo "warning: Aladin Lite not fetched (needs npm); the notebook view will use the CDN"
	touch $@

# Debian's Chromium for the end-to-end notebook test (Playwright drives it; it downloads no
# browser of its own). Installed with apt-get where it is missing; without root, sudo is tried.
/usr/bin/chromium:
	@SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	echo "warning: Chromium not installed (apt-get failed); the browser test will be skipped"

browser: /usr/bin/chromium

# SAOImage DS9, Xvfb and xpa-tools for the end-to-end DS9 test (tests/test_ds9.py runs a real DS9 on
# a virtual display and drives its Analysis menu over XPA). Installed with apt-get where one is
# missing; without root, sudo is tried.
/usr/bin/ds9 /usr/bin/Xvfb /usr/bin/xpaset:
	@SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$SUDO apt-get install -y -q --no-install-recommends saods9 xvfb xpa-tools >/dev/null 2>&1 || \
	{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q --no-install-recommends saods9 xvfb xpa-tools >/dev/null; } || \
	echo "warning: DS9, Xvfb or xpa-tools not installed (apt-get failed); the DS9 test will be skipped"

ds9: /usr/bin/ds9 /usr/bin/Xvfb /usr/bin/xpaset

# PostgreSQL's server programs for the PostgreSQL job store's tests (each test run makes and
# starts a throw-away cluster of its own; nothing is configured on the machine). Installed with
# apt-get where initdb is missing; without root, sudo is tried.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$SUDO apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 || \
	{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q --no-install-recommends postgresql >/dev/null; } || \
	echo "warning: PostgreSQL not installed (apt-get failed); the PostgreSQL store tests will be skipped"; }

# JupyterHub's proxy (configurable-http-proxy, from npm) for the shared-service test, which runs a
# real hub (jupyterhub itself comes with the [dev] extra).
$(VENV)/hub/node_modules/.bin/configurable-http-proxy: | $(BIN)/python
	npm install --silent --no-audit --no-fund --prefix $(VENV)/hub configurable-http-proxy@5 || \
	echo "warning: configurable-http-proxy not installed (needs npm); the JupyterHub test will be skipped"

hub-proxy: $(VENV)/hub/node_modules/.bin/configurable-http-proxy

install: $(VENV)/.installed browser ds9 postgres hub-proxy

# JupyterLab with the extension (the service runs inside it) and the quickstart notebook open.
# It runs on copies in $(DEMO_DIR)/notebooks (made once, then kept with your changes), so the
# notebooks' outputs and the files they write never touch the tracked ones.
demo: install
	mkdir -p $(DEMO_DIR)/notebooks
	cp -n notebooks/*.ipynb $(DEMO_DIR)/notebooks/
	$(BIN)/jupyter lab --ServerApp.root_dir=$(DEMO_DIR)/notebooks --LabApp.default_url=/lab/tree/quickstart.ipynb $(DEMO_ARGS) $(ROOT_FLAG)

# The headless equivalent: simulate a radio sky, detect its sources, write the catalogue.
demo-cli: install
	mkdir -p $(DEMO_DIR)
	$(BIN)/cianna-otf simulate $(DEMO_DIR)/sky.fits --size 2048 --seed 1 --truth $(DEMO_DIR)/truth.vot --overwrite
	$(BIN)/cianna-otf detect $(DEMO_DIR)/sky.fits -o $(DEMO_DIR)/sources.vot
	$(BIN)/cianna-otf detect $(DEMO_DIR)/sky.fits -o $(DEMO_DIR)/sources.reg --format ds9
	$(BIN)/cianna-otf detect $(DEMO_DIR)/sky.fits --model classic -o $(DEMO_DIR)/sources-classic.vot
	@echo "Catalogue (yolo-demo): $(DEMO_DIR)/sources.vot  regions: $(DEMO_DIR)/sources.reg  classic: $(DEMO_DIR)/sources-classic.vot  truth: $(DEMO_DIR)/truth.vot"

# The fast suite plus the golden vectors (CI runs exactly this).
test: install
	$(BIN)/python -m pytest -m "not slow" -q

test-all: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache cianna_otf_jupyter/static/aladin-lite
