# The README's two commands are `make run` (install, train if no model exists, export, serve)
# and `make test` (install, then the test suite). Everything installs from this repository's
# own files: uv.lock for Python, package-lock.json for JavaScript.

UV_VERSION := 0.13.8
REPO ?= models
NAME ?= digits
MODEL ?= cnn
PYTEST_ARGS ?=
VENV_BIN := .venv/bin

export UV_PYTHON_DOWNLOADS := never
# MNIST: DIGITSERVE_DATA if set, else the copy beside this checkout if there is one,
# else the Keras cache or download.
ifeq ($(DIGITSERVE_DATA),)
  ifneq ($(wildcard ../shared/data/mnist/*.gz),)
    export DIGITSERVE_DATA := $(abspath ../shared/data/mnist)
  endif
endif

.PHONY: run setup system-packages python-packages js-packages interop-packages model test test-slow test-all bench lint stubs clean

run: setup model  ## install, train if no model exists, export, serve on 127.0.0.1:50051
	$(VENV_BIN)/digitserve serve --repo $(REPO) --name $(NAME)

setup: system-packages python-packages js-packages interop-packages

system-packages:  ## Debian packages the tests use: Chromium (browser tests), docker-compose, kubectl (deploy checks)
	@if ! command -v chromium >/dev/null || ! command -v docker-compose >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium docker-compose; \
	fi
	@command -v kubectl >/dev/null || { apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client; }  # Debian's kubectl

python-packages:
	@command -v uv >/dev/null || python3 -m pip install -q "uv==$(UV_VERSION)"
	uv sync --locked --extra train

js-packages:
	npm ci --no-audit --no-fund

interop-packages:  ## Triton's client in .venv-triton (its protobuf clashes with ours), for the interop test
	tests/interop/make_triton_venv.sh

REPOSITORY := from digitserve.repository import ModelRepository; r = ModelRepository('$(REPO)', '$(NAME)')

model:  ## train a model if none exists, export the newest version if it has no manifest
	@$(VENV_BIN)/python -c "$(REPOSITORY); exit(0 if r.versions() else 1)" \
		|| $(VENV_BIN)/digitserve train --model $(MODEL) --repo $(REPO) --name $(NAME)
	@$(VENV_BIN)/python -c "$(REPOSITORY); exit(0 if r.latest_version() in r.complete_versions() else 1)" \
		|| $(VENV_BIN)/digitserve export --repo $(REPO) --name $(NAME)

test: setup  ## the test suite CI runs (slow suites excluded)
	$(VENV_BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup  ## the slow suites only (full-data training)
	$(VENV_BIN)/pytest -m slow $(PYTEST_ARGS)

test-all: setup
	$(VENV_BIN)/pytest $(PYTEST_ARGS)

bench: setup  ## training benchmark on all of MNIST (about 10 minutes on 2 cores)
	$(VENV_BIN)/digitserve bench train

lint:
	$(VENV_BIN)/ruff check .

clean:
	rm -rf .venv .venv-triton node_modules .pytest_cache
