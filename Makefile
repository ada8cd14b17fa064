# Two commands do all set-up on a fresh Debian machine:
#   make train   RigL training run (LeNet-300-100 on Fashion-MNIST, 90% ERK)
#   make test    the test suite, in both Keras flavours, then the
#                backend-neutral tests (tests/backends) on Keras 3's JAX backend
# Both create .venv and install what they need on first use.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# English text for the character language model (examples/train_lm.py).
CORPUS := /usr/share/games/fortunes/fortunes
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TRAIN_FLAGS ?=
PYTEST_FLAGS ?= -q

.PHONY: setup data corpus train train-lm test test-keras3 test-tf-keras test-jax test-torch \
  jax torch benchmarks clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

data: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q dataset-fashion-mnist

train: setup data
	$(PY) examples/train.py $(TRAIN_FLAGS)

corpus: $(CORPUS)

$(CORPUS):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q fortunes

train-lm: setup corpus
	$(PY) examples/train_lm.py $(TRAIN_FLAGS)

# Keras 3 (the default) and tf_keras (TF_USE_LEGACY_KERAS=1), two jobs at a
# time (each target's output is printed whole when it ends); each runs the
# tests, then every docstring example in keras_rigl as a doctest. Then
# tests/backends on Keras 3's JAX backend (installs jax, pinned in
# constraints.txt, when it is missing); tests/backends runs in the two
# TensorFlow passes too: it is backend-neutral. Two at once take about 16
# minutes on 2 cores, where one after the other took over 30.
test: setup data
	$(MAKE) --no-print-directory -j2 --output-sync=target test-keras3 test-tf-keras test-jax

test-keras3: setup data
	$(PY) -m pytest $(PYTEST_FLAGS)
	$(PY) -m pytest $(PYTEST_FLAGS) --doctest-modules keras_rigl

test-tf-keras: setup data
	TF_USE_LEGACY_KERAS=1 $(PY) -m pytest $(PYTEST_FLAGS)
	TF_USE_LEGACY_KERAS=1 $(PY) -m pytest $(PYTEST_FLAGS) --doctest-modules keras_rigl

jax: setup
	$(PY) -c "import jax" 2>/dev/null || $(PY) -m pip install -q -c constraints.txt "jax[cpu]"

test-jax: jax data
	KERAS_BACKEND=jax $(PY) -m pytest $(PYTEST_FLAGS) tests/backends

# PyTorch (pinned in constraints.txt: torch 2.13.0, the CPU build) is not part
# of `make test`; tests/backends skips its torch comparison without it.
torch: setup
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q -c constraints.txt torch

test-torch: torch data
	KERAS_BACKEND=torch $(PY) -m pytest $(PYTEST_FLAGS) tests/backends

benchmarks: setup data
	$(PY) benchmarks/epoch_time.py
	TF_USE_LEGACY_KERAS=1 $(PY) benchmarks/epoch_time.py --variants dense,static,rigl,tfmot
	$(PY) benchmarks/mask_update.py

clean:
	rm -rf $(VENV) *.egg-info
