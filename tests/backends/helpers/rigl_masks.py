"""Five RigL updates on LeNet-300-100 (90% ERK) with fixed gradients; saves the masks.

Run by tests/backends/test_identical_masks.py once per backend, in a fresh
process (KERAS_BACKEND must be set before Keras is imported):

    KERAS_BACKEND=jax python tests/backends/helpers/rigl_masks.py out.npz

The weights and gradients of every update come from a seeded numpy generator
(rounded, so that ties occur; NaN grow scores in one layer at one update), not from training, so
every backend sees the same numbers; the update is the scheduler's own
(`DropGrowScheduler`: cosine drop fraction, drop by |W|, grow by |g|, slot
resets), on TensorFlow through `keras_rigl.masks`, elsewhere through
`keras_rigl.portable_masks`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top

import keras_rigl as kr  # pylint: disable=g-import-not-at-top
from keras_rigl import backend  # pylint: disable=g-import-not-at-top
from keras_rigl._keras import keras  # pylint: disable=g-import-not-at-top
from keras_rigl.methods.drop_grow import DropGrowScheduler  # pylint: disable=g-import-not-at-top

UPDATE_STEPS = (0, 100, 200, 300, 400)


class FixedGradients(DropGrowScheduler):
  """Drop/grow whose grow scores are given per step (|gradient|)."""

  def __init__(self, gradients, **kwargs):
    super().__init__(**kwargs)
    self.gradients = gradients

  def _update_argument(self, step, check=True):
    fraction, _ = super()._update_argument(step, check)
    grads = self.gradients[step]
    if backend.IS_TENSORFLOW:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      grads = [tf.constant(g) for g in grads]
    return fraction, grads

  def _grow_scores(self, step, source):
    return [abs(g) for g in source]


def fixed_numbers(step, shapes):
  rng = np.random.default_rng(1000 + step)
  weights = [np.round(rng.normal(size=s), 2).astype("float32") for s in shapes]
  grads = [np.round(rng.normal(size=s), 3).astype("float32") for s in shapes]
  if step == 200:  # A layer whose scores hold NaN skips this update.
    grads[1].ravel()[rng.integers(0, grads[1].size, 3)] = np.nan
  return weights, grads


def main(path):
  model = kr.sparsify(kr.models.lenet300_100(), 0.9, "erk", seed=3)
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  targets = [pair for layer in model.layers if isinstance(layer, kr.SparseWrapper)
             for pair in layer.masked_weights]
  shapes = [tuple(w.shape) for w, _ in targets]
  numbers = {step: fixed_numbers(step, shapes) for step in UPDATE_STEPS}
  out = {"initial/%d" % i: np.asarray(m) for i, (_, m) in enumerate(targets)}
  scheduler = FixedGradients({s: g for s, (_, g) in numbers.items()}, update_freq=100,
                             drop_fraction=0.3, begin_step=0, end_step=500)
  scheduler.set_model(model)
  scheduler.set_params({"steps": 500, "epochs": 1})
  scheduler.on_train_begin()
  for step in UPDATE_STEPS:
    for (weight, mask), value in zip(targets, numbers[step][0]):
      weight.assign(value * np.asarray(mask))
    scheduler._run_update(step)  # pylint: disable=protected-access
    for i, (weight, mask) in enumerate(targets):
      out["mask/%d/%d" % (step, i)] = np.asarray(mask)
      out["weight/%d/%d" % (step, i)] = np.asarray(weight)
  out["history"] = np.asarray([change for _, change in scheduler.update_history])
  np.savez(path, **out)


if __name__ == "__main__":
  main(sys.argv[1])
