"""The same masks on every backend: initial masks and five RigL updates.

Each backend runs tests/backends/helpers/rigl_masks.py in its own process
(KERAS_BACKEND is read when Keras is imported); the masks must be identical
to those of Keras 3 on TensorFlow (`keras_rigl.masks`), entry for entry.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_rigl import backend

# Each comparison starts its own process per backend, whatever backend this
# process runs: run them once, in the JAX pass of `make test` (make test-jax),
# not again in the TensorFlow passes.
pytestmark = pytest.mark.skipif(
    backend.NAME != "jax", reason="runs once, in the JAX pass (make test-jax): it "
    "starts a process per backend itself")

HELPER = os.path.join(os.path.dirname(__file__), "helpers", "rigl_masks.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_on(tmp_path, backend, legacy=False):
  path = str(tmp_path / f"{backend}{'_legacy' if legacy else ''}.npz")
  env = dict(os.environ, KERAS_BACKEND=backend, TF_USE_LEGACY_KERAS="1" if legacy else "0",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, HELPER, path], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return dict(np.load(path))


def assert_same(reference, other):
  assert sorted(reference) == sorted(other)
  for key in reference:
    if key == "history":  # Fractions of entries changed: a float division.
      np.testing.assert_allclose(reference[key], other[key], rtol=1e-12)
    else:  # Masks and weights: bit for bit.
      np.testing.assert_array_equal(reference[key], other[key], err_msg=key)


@pytest.fixture(scope="module")
def tensorflow_masks(tmp_path_factory):
  masks = run_on(tmp_path_factory.mktemp("tf"), "tensorflow")
  assert np.all(masks["history"] > 0)  # Every update moved connections.
  return masks


def test_jax_masks_identical_to_tensorflow(tensorflow_masks, tmp_path):
  if importlib.util.find_spec("jax") is None:
    pytest.skip("jax is not installed (make test-jax installs it)")
  assert_same(tensorflow_masks, run_on(tmp_path, "jax"))


def test_torch_masks_identical_to_tensorflow(tensorflow_masks, tmp_path):
  if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed (make test-torch installs it)")
  assert_same(tensorflow_masks, run_on(tmp_path, "torch"))


def test_tf_keras_masks_identical_to_keras3(tensorflow_masks, tmp_path):
  assert_same(tensorflow_masks, run_on(tmp_path, "tensorflow", legacy=True))
