"""keras_rigl.portable_masks (keras.ops, every Keras 3 backend) == keras_rigl.masks (TF).

Runs in the Keras 3 flavour (tf_keras has no keras.ops) on the TensorFlow
backend, where both implementations can run side by side; the cross-backend
check (JAX, PyTorch against TensorFlow) is tests/backends/test_identical_masks.py.
Inputs are rounded so that scores tie, with NaN and Inf among them.
"""

import numpy as np
import pytest

from keras_rigl import _keras
from keras_rigl import masks

pytestmark = pytest.mark.skipif(not _keras.IS_KERAS3, reason="keras.ops is Keras 3 only")

if _keras.IS_KERAS3:
  from keras_rigl import portable_masks  # pylint: disable=g-import-not-at-top


def _case(rng, shape, density):
  mask = (rng.random(shape) < density).astype("float32")
  weights = np.round(rng.normal(size=shape), 1).astype("float32") * mask
  grads = np.round(rng.normal(size=shape), 1).astype("float32")
  if rng.random() < 0.3:
    grads.flat[rng.integers(grads.size)] = np.nan
  if rng.random() < 0.3:
    grads.flat[rng.integers(grads.size)] = np.inf
  return mask, weights, grads


def _numpy(value):
  return np.asarray(value)


SHAPES = [(12, 5), (7, 3), (3, 3, 4, 6), (40, 2), (5, 9)]


@pytest.mark.parametrize("min_fan_in", [1, 2, 3, 50])
def test_min_fan_in_update_equals_tensorflow(min_fan_in):
  rng = np.random.default_rng(min_fan_in)
  for trial in range(12):
    shape = SHAPES[trial % len(SHAPES)]
    mask, weights, grads = _case(rng, shape, density=rng.choice([0.1, 0.3, 0.6]))
    fraction = float(rng.choice([0.1, 0.3, 0.5, 1.0]))
    expected = masks.min_fan_in_update(mask, weights, grads, fraction, min_fan_in)
    got = portable_masks.min_fan_in_update(mask, weights, grads, fraction, min_fan_in)
    for e, g in zip(expected, got):
      np.testing.assert_array_equal(_numpy(e), _numpy(g), err_msg=f"{shape} {trial}")


def test_min_fan_in_zero_is_update_mask():
  rng = np.random.default_rng(0)
  mask, weights, grads = _case(rng, (10, 4), 0.4)
  expected = portable_masks.update_mask(mask, weights, grads, 0.3)
  got = portable_masks.min_fan_in_update(mask, weights, grads, 0.3, 0)
  for e, g in zip(expected, got):
    np.testing.assert_array_equal(_numpy(e), _numpy(g))


def test_top_mask_per_unit_equals_a_stable_sort_per_column():
  rng = np.random.default_rng(3)
  scores = np.round(rng.normal(size=(30, 7)), 1).astype("float32")
  eligible = rng.random((30, 7)) < 0.6
  counts = np.array([min(int(c), int(e)) for c, e in
                     zip(rng.integers(0, 8, 7), eligible.sum(0))], "int32")
  got = _numpy(portable_masks.top_mask_per_unit(scores, eligible, counts))
  for unit in range(7):
    rows = [r for r in np.argsort(-scores[:, unit], kind="stable") if eligible[r, unit]]
    expected = np.zeros(30, bool)
    expected[rows[:counts[unit]]] = True
    np.testing.assert_array_equal(got[:, unit], expected)
