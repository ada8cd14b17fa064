"""Gradual magnitude pruning (Zhu & Gupta, 2017): the dense-to-sparse baseline."""

import math
import numbers

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import backend
from keras_rigl import portable_masks
from keras_rigl.masks import prune_mask
from keras_rigl.methods.base import MaskScheduler
from keras_rigl.methods.validation import check_fraction
from keras_rigl.methods.timing import polynomial_sparsity


class MagnitudePruningScheduler(MaskScheduler):
  """Gradual magnitude pruning (Zhu & Gupta, 2017): dense to sparse.

  Every `update_freq` steps between `begin_step` and `end_step` each sparse
  weight keeps only its largest-magnitude connections, following
  ``s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power``. The final
  sparsity `s_f` is `final_sparsity` for every layer or, when None, each
  layer's own target (the one `sparsify` gave it: uniform/ER/ERK). Use masks
  that start dense: ``sparsify(model, 0.9, mask_init="dense")``.

  Args:
    initial_sparsity: sparsity at begin_step (usually 0), at most the final one.
    final_sparsity: float in [0, 1), or None for each layer's own target.
    begin_step, end_step: the pruning window; end_step=None is 75% of the run.
    update_freq: steps between pruning steps.
    power: exponent of the schedule (3 in the paper), > 0.
    schedule: optional `tfmot.sparsity.keras.PruningSchedule` (tf_keras) or any
      callable ``step -> (should_prune, sparsity)``; overrides the above.

  Example:
  >>> import numpy as np, tensorflow as tf, keras_rigl as kr
  >>> from keras_rigl._keras import keras
  >>> x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
  >>> train = tf.data.Dataset.from_tensor_slices((x, x[:, :2])).batch(16)
  >>> model = kr.sparsify(keras.Sequential([keras.Input((12,)),
  ...     keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)]),
  ...     0.9, "uniform", mask_init="dense")
  >>> model.compile("sgd", "mse")
  >>> pruning = kr.MagnitudePruningScheduler(0.0, 0.5, begin_step=0, end_step=6,
  ...                                        update_freq=2)
  >>> history = model.fit(train, epochs=2, callbacks=[pruning], verbose=0)
  >>> [round(l.sparsity, 2) for l in model.layers if isinstance(l, kr.SparseWrapper)]
  [0.5, 0.5]
  """

  _fixed_count = False  # Compressed layers cannot be pruned.

  def __init__(self, initial_sparsity=0.0, final_sparsity=None, begin_step=0,
               end_step=None, update_freq=100, power=3, schedule=None):
    super().__init__(update_freq, begin_step, end_step, seed=0)
    owner = "MagnitudePruningScheduler: "
    self.initial_sparsity = check_fraction("initial_sparsity", initial_sparsity,
                                            high_open=True, owner=owner)
    self.final_sparsity = None if final_sparsity is None else check_fraction(
        "final_sparsity", final_sparsity, high_open=True, owner=owner)
    if self.final_sparsity is not None and self.initial_sparsity > self.final_sparsity:
      raise ValueError(
          f"{owner}initial_sparsity ({initial_sparsity}) is above final_sparsity "
          f"({final_sparsity}): pruning only removes connections. Swap them, e.g. "
          f"MagnitudePruningScheduler({final_sparsity}, {initial_sparsity}, ...).")
    if (isinstance(power, (bool, np.bool_)) or not isinstance(power, numbers.Real) or
        not math.isfinite(power) or power <= 0):
      raise ValueError(f"{owner}power must be a number > 0 (3 in the paper), got {power!r}.")
    if schedule is not None and not callable(schedule):
      raise ValueError(f"{owner}schedule must be callable (e.g. a tfmot PruningSchedule), "
                       f"got {schedule!r}.")
    self.power = float(power)
    self.schedule = schedule
    self._fraction = 0.0

  def _check_schedule(self):
    if self.final_sparsity is None and self.schedule is None:
      for layer in {id(t.wrapper): t.wrapper for t in self._find_targets()}.values():
        wanted = layer.target_sparsity
        for key, value in (wanted.items() if isinstance(wanted, dict) else [("", wanted)]):
          if self.initial_sparsity > value:
            raise ValueError(
                f"MagnitudePruningScheduler: initial_sparsity ({self.initial_sparsity}) "
                f"is above the target sparsity {value} of layer {layer.name!r}"
                f"{' ' + key if key else ''}: pruning only removes connections. Lower "
                "initial_sparsity or pass final_sparsity.")

  def _final(self, target):
    if self.final_sparsity is not None:
      return self.final_sparsity
    wanted = target.wrapper.target_sparsity
    return wanted[target.wrapper.weight_keys[target.index]] if isinstance(wanted, dict) else wanted

  def _progress_sparsities(self, step):
    return [polynomial_sparsity(step, self.initial_sparsity, self._final(t),
                                self.begin_step, self._end_step, self.power)
            for t in self._targets]

  def _should_update(self, step):
    if self.schedule is not None:
      should_prune, _ = self.schedule(tf.constant(step, tf.int64))
      return bool(should_prune)
    return super()._should_update(step)

  def _next_update_step(self, step):
    if self.schedule is not None:
      return None  # An external schedule may prune at any step.
    return super()._next_update_step(step)

  def _update_argument(self, step, check=True):
    if self.schedule is not None:
      _, sparsity = self.schedule(tf.constant(step, tf.int64))
      values = [float(sparsity)] * len(self._targets)
    else:
      values = self._progress_sparsities(step)
    if not backend.IS_TENSORFLOW:
      return [float(v) for v in values]
    return tf.constant(values, tf.float64)

  def _new_masks(self, step, sparsities):
    results = []
    if not backend.IS_TENSORFLOW:  # JAX / PyTorch: the keras.ops rule.
      for i, t in enumerate(self._targets):
        new_mask = portable_masks.prune_mask(_keras.variable_tensor(t.mask),
                                             _keras.variable_tensor(t.weight),
                                             sparsities[i])
        results.append((new_mask, _keras.keras.ops.zeros_like(new_mask, "bool")))
      return results
    for i, t in enumerate(self._targets):
      mask = _keras.variable_tensor(t.mask)
      new_mask = prune_mask(mask, _keras.variable_tensor(t.weight), sparsities[i],
                            max_update=t.max_update)
      results.append((new_mask, tf.zeros_like(new_mask, tf.bool)))
    return results

