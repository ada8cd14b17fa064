"""Shared test set-up: two logical CPUs (for MirroredStrategy) and small fixtures."""

import gc
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

# Must run before TensorFlow initialises its devices: split the CPU in two so
# that MirroredStrategy has two replicas on this machine.
try:
  _cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:
  pass

from keras_rigl._keras import keras  # pylint: disable=g-import-not-at-top
from keras_rigl.custom_gradient import gradient_registry  # pylint: disable=g-import-not-at-top


_MIRRORED = []


def shared_mirrored_strategy():
  """One MirroredStrategy over the two logical CPUs for the whole session.

  Several MirroredStrategy objects in one process can reuse collective
  instance keys and abort each other's all-reduces, so every test shares one.
  """
  if not _MIRRORED:
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(cpus) >= 2, "conftest could not split the CPU into 2 logical devices"
    _MIRRORED.append(tf.distribute.MirroredStrategy(cpus[:2]))
  return _MIRRORED[0]


# Python's garbage collector. TensorFlow objects that die in a collection
# (traced functions above all) are expensive to destroy, and the longer the
# process runs the more each costs: left to the collector's own rhythm, single
# late tests spent 15-60 s in one collection. Collecting after every test keeps
# each collection small; the objects alive once TensorFlow and Keras are
# imported are frozen out of every collection. The summary names any test that
# still spends over 5 s collecting.
_GC_SECONDS = {"current": 0.0, "started": None}
_GC_SLOW = []


def _gc_timer(phase, info):  # pylint: disable=unused-argument
  if phase == "start":
    _GC_SECONDS["started"] = time.perf_counter()
  elif _GC_SECONDS["started"] is not None:
    _GC_SECONDS["current"] += time.perf_counter() - _GC_SECONDS["started"]
    _GC_SECONDS["started"] = None


gc.callbacks.append(_gc_timer)
gc.collect()
gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):  # pylint: disable=unused-argument
  _GC_SECONDS["current"] = 0.0
  yield
  if _GC_SECONDS["current"] > 5.0:
    _GC_SLOW.append((item.nodeid, _GC_SECONDS["current"]))


def pytest_terminal_summary(terminalreporter):
  for nodeid, seconds in _GC_SLOW:
    terminalreporter.write_line(f"gc: {seconds:.1f} s in garbage collection during {nodeid}")


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test():
  yield
  gc.collect()


@pytest.fixture(autouse=True, scope="module")
def _fresh_keras_session_per_module():
  # tf.custom_gradient registers a gradient function per traced call and never
  # removes it; its closure keeps the whole traced graph alive. TensorFlow's
  # own ReplicaContext.all_reduce (every Keras 3 train step) is one such call,
  # so each traced train function outlived its test, and late tests ran up to
  # 10x slower than alone. keras_rigl's calls free theirs
  # (keras_rigl.custom_gradient); what the module's tests registered otherwise
  # is dropped with the module's models.
  registry = gradient_registry()
  before = set(registry) if registry is not None else set()
  yield
  keras.backend.clear_session()
  if registry is not None:
    for name in set(registry) - before:
      if name.startswith("CustomGradient-"):
        del registry[name]


@pytest.fixture
def mirrored_strategy():
  return shared_mirrored_strategy()


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture
def toy_data():
  """256 examples of 12 features, 3 classes, learnable by a small MLP."""
  r = np.random.default_rng(1)
  x = r.normal(size=(256, 12)).astype("float32")
  y = (x[:, :3].argmax(axis=1)).astype("int32")
  return x, y


@pytest.fixture
def toy_dataset(toy_data):
  x, y = toy_data
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)


def token_dataset(vocab=50, length=5, classes=3, examples=64, batch=16):
  """Integer token rows and class labels (seeded), for embedding models."""
  r = np.random.default_rng(0)
  return tf.data.Dataset.from_tensor_slices(
      (r.integers(0, vocab, (examples, length)).astype("int32"),
       r.integers(0, classes, examples).astype("int32"))).batch(batch)


def make_mlp(hidden=24, inputs=12, classes=3, name="mlp"):
  return keras.Sequential([
      keras.Input((inputs,)),
      keras.layers.Dense(hidden, activation="relu", name="fc1"),
      keras.layers.Dense(hidden, activation="relu", name="fc2"),
      keras.layers.Dense(classes, name="logits"),
  ], name=name)


@pytest.fixture
def mlp():
  keras.utils.set_random_seed(0)
  return make_mlp()


def masked_pairs(model):
  """[(weight ndarray, mask ndarray)] of every SparseWrapper in `model`."""
  from keras_rigl.surgery import walk_layers  # pylint: disable=g-import-not-at-top
  from keras_rigl.wrapper import SparseWrapper  # pylint: disable=g-import-not-at-top
  return [(np.asarray(w), np.asarray(m)) for layer in walk_layers(model)
          if isinstance(layer, SparseWrapper) for w, m in layer.masked_weights]


def sparse_ce():
  return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
