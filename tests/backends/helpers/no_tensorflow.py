"""keras_rigl on Keras 3's JAX or PyTorch backend in a process that cannot import TensorFlow.

Run by tests/backends/test_no_tensorflow.py (KERAS_BACKEND=jax or torch):

    KERAS_BACKEND=torch python tests/backends/helpers/no_tensorflow.py

An import hook makes ``import tensorflow`` (and tf_keras, tfmot, tfds) fail,
as on a machine where TensorFlow is not installed. The masked storage and
every scheduler must work; TensorFlow-only features must raise
TensorFlowOnlyError; and TensorFlow must never have been imported. Prints
"ok" at the end.
"""

import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
import warnings

BLOCKED = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "tensorflow_datasets")


class _NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Finds the blocked packages (without an origin) and fails to load them."""

  def find_spec(self, fullname, path=None, target=None):
    if fullname.split(".")[0] in BLOCKED:
      return importlib.machinery.ModuleSpec(fullname, self, origin=None)
    return None

  def create_module(self, spec):
    raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked by the test)",
                              name=spec.name)

  def exec_module(self, module):
    raise ModuleNotFoundError(f"No module named {module.__name__!r} (blocked)")


sys.meta_path.insert(0, _NoTensorFlow())

import numpy as np  # pylint: disable=g-import-not-at-top

import keras_rigl as kr  # pylint: disable=g-import-not-at-top
from keras_rigl import backend  # pylint: disable=g-import-not-at-top
from keras_rigl._keras import keras  # pylint: disable=g-import-not-at-top


def check(condition, what):
  if not condition:
    raise AssertionError(what)


def data(n=128):
  r = np.random.default_rng(1)
  x = r.normal(size=(n, 12)).astype("float32")
  return x, x[:, :3].argmax(axis=1).astype("int32")


def model(sparsity=0.8, mask_init="random"):
  keras.utils.set_random_seed(0)
  dense = keras.Sequential([keras.Input((12,)), keras.layers.Dense(24, activation="relu"),
                            keras.layers.Dense(3)])
  sparse = kr.sparsify(dense, sparsity, "erk", mask_init=mask_init)
  sparse.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return sparse


def ones(m):
  return [int(np.asarray(mask).sum()) for layer in m.layers
          if isinstance(layer, kr.SparseWrapper) for _, mask in layer.masked_weights]


def main():
  check(backend.NAME in ("jax", "torch"), f"run with KERAS_BACKEND=jax/torch, not {backend.NAME}")
  x, y = data()
  batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
  callbacks = {
      "static": [],
      "rigl_data": [kr.RigLScheduler(batches, update_freq=2, end_step=6)],
      "rigl_data_normal": [kr.RigLScheduler(batches, update_freq=2, end_step=6,
                                            grow_init="random_normal")],
      "rigl_in_step": [kr.RigLScheduler(update_freq=2, end_step=6)],
      "set": [kr.SETScheduler(update_freq=2, end_step=6, grow_init="random_uniform")],
  }
  for name, cbs in callbacks.items():
    m = model()
    before = ones(m)
    history = m.fit(x, y, batch_size=32, epochs=2, callbacks=cbs, verbose=0)
    check(np.isfinite(history.history["loss"][-1]), name)
    check(ones(m) == before, f"{name}: counts {before} -> {ones(m)}")
    for cb in cbs:
      check(cb.updates == 4, f"{name}: {cb.updates} updates")
  m = model(0.9, mask_init="dense")
  pruning = kr.MagnitudePruningScheduler(0.0, 0.5, begin_step=0, end_step=6, update_freq=2)
  m.fit(x, y, batch_size=32, epochs=2, callbacks=[pruning], verbose=0)
  dense = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16), keras.layers.Dense(3)])
  snipped = kr.snip(dense, batches, 0.8, batches=2,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  m = model()
  kr.strip(m)
  kr.sparsity_report(m)
  check(0 < kr.count_flops(m).ratio < 1, "count_flops")
  check(0 < kr.count_flops(snipped).ratio < 1, "count_flops of snip")
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "model.keras")
    m.save(path)
    keras.models.load_model(path)
  for use in (lambda: kr.export(m, "unused"),
              lambda: kr.layers.SparseDense(4, 0.5),
              lambda: kr.recipes.strategy.make_strategy("mirrored")):
    try:
      use()
    except backend.TensorFlowOnlyError:
      pass
    else:
      raise AssertionError("a TensorFlow-only feature did not raise TensorFlowOnlyError")
  loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
  check(not loaded, f"imported {loaded}")
  print("ok")


if __name__ == "__main__":
  warnings.simplefilter("ignore")
  main()
