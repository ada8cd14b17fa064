"""Sparse momentum (SNFS, Dettmers & Zettlemoyer, 2019) as a Keras callback.

SNFS keeps an exponential moving average of every sparse weight's *dense*
gradient (its "momentum"), fed at every training step. At each mask update
every layer prunes its smallest-magnitude weights, the total pruned is split
over the layers in proportion to their mean ``|momentum|`` (so layer counts
move while the total stays exact), and each layer regrows the inactive
connections with the largest ``|momentum|``. The RigL paper compares RigL
with it; `keras_rigl.flops.training_flops(..., "snfs")` counts its cost.
"""

import numbers

import numpy as np

from keras_rigl.methods.drop_grow import DropGrowScheduler
from keras_rigl.methods.validation import check_fraction
from keras_rigl.methods.timing import parse_drop_fraction_schedule


class SNFSScheduler(DropGrowScheduler):
  """SNFS: prune by magnitude, regrow by momentum, redistribute by momentum.

  Every training step, each SparseWrapper weight's momentum buffer becomes
  ``m <- momentum * m + (1 - momentum) * dL/d(W * M)``: the dense gradient of
  the training loss w.r.t. the effective weights, summed over replicas (the
  masked layers compute it anyway; the optimizer still sees the masked
  gradient). On an update step (``begin_step <= step <= end_step`` and
  ``step % update_freq == 0``, ``step = optimizer.iterations``):

  1. each layer prunes ``floor(prune_rate(step) * n_active)`` active weights
     of smallest ``|W|``;
  2. with `redistribution`, layer counts move in proportion to each layer's
     mean ``|m|`` over its active weights: a favoured layer prunes up to 1/4
     fewer than that, a disfavoured one up to 1/4 more (its smallest weights),
     and every layer regrows the count of step 1 (a layer gains at most its
     free positions, the rest goes to the others, so the total count of ones
     is exactly constant while layer counts move); without it each layer
     regrows what it pruned;
  3. each layer regrows the inactive positions (just-pruned ones included)
     with the largest ``|m|``. Grown weights start at zero and their optimizer
     slots are reset, as in RigL.

  Differences from the authors' PyTorch code (TimDettmers/sparse_learning),
  on purpose: counts use floor (theirs: ceil); counts move through the
  prune, by at most 1/4 of a layer's prune count per update, every layer
  regrowing its nominal count (theirs: the regrowth moves, anything up to 99%
  of a layer's free positions; one update could make a small layer dense and
  kill training, and extra regrowth in the layers of largest gradient
  destabilised LeNet-5 runs: see `keras_rigl.redistribution`), which keeps
  the total exact without their correction loop; the momentum is this callback's own EMA of the dense
  gradient (theirs: the optimizer's momentum buffer, ``m <- mu m + g``, which
  ranks and redistributes the same up to a constant factor, and which is
  zeroed at inactive positions after each update; ours is not); updates every
  `update_freq` steps until `end_step` (theirs: once per epoch) and the
  prune-rate schedules of RigL (their cosine decays to 0.005).

  The momentum buffers are per-replica, non-trainable variables held by the
  wrappers (not saved with the model; `resume_state` / `restore_resume_state`
  carry them over to a resumed run, as examples/train.py's backups do);
  enabling them makes the model's train function be traced again once. An
  update step that comes before any training step has fed the momentum
  (step 0, or the first step of a resumed run) is skipped: there is nothing
  to rank by yet.
  Masked storage only (`keras_rigl.sparsify`'s default: compressed layers
  cannot hold the dense momentum it grows by (their counts can move when
  built with capacity, which RigL's redistribution uses; see
  docs/compressed_schedulers.md); not under TPUStrategy (layer counts moving
  needs dynamic shapes).

  Args:
    update_freq: steps between mask updates.
    prune_rate: initial fraction of each layer's active weights pruned per
      update, in [0, 1] (0.5 in the paper).
    prune_rate_schedule: "cosine" (default), "constant", "exponential" /
      "exponential_<k>", or a callable step -> fraction in [0, 1].
    momentum: EMA coefficient of the dense gradient, in [0, 1) (0.9).
    redistribution: True (SNFS) or False (sparse momentum growth with fixed
      layer counts).
    begin_step, end_step: first and last step at which masks may change;
      end_step=None is 75% of the run's total steps (as RigL).
    seed: unused by the algorithm (deterministic); kept for symmetry.

  Logs ``drop_fraction`` (the prune rate), ``mask_change``,
  ``skipped_updates`` and, with redistribution, ``active_weights`` (total
  ones) and ``flops_ratio`` into the epoch logs; `count_history` and
  `flops_history` hold the per-update layer counts and inference FLOPs ratio.

  Example:
  >>> import numpy as np, tensorflow as tf, keras_rigl as kr
  >>> from keras_rigl._keras import keras
  >>> dense = keras.Sequential([keras.Input((12,)),
  ...     keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)])
  >>> model = kr.sparsify(dense, 0.8)
  >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  >>> x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
  >>> train = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32"))).batch(16)
  >>> snfs = kr.SNFSScheduler(update_freq=2, end_step=6)
  >>> history = model.fit(train, epochs=2, callbacks=[snfs], verbose=0)
  >>> snfs.updates, [sum(counts.values()) for _, counts in snfs.count_history]
  (3, [91, 91, 91])
  """

  _schedule_arg = "prune_rate_schedule"

  def __init__(self, update_freq=100, prune_rate=0.5, prune_rate_schedule="cosine",
               momentum=0.9, redistribution=True, begin_step=0, end_step=None, seed=0):
    owner = "SNFSScheduler: "
    if not isinstance(update_freq, (numbers.Number, np.generic)) and \
        hasattr(update_freq, "__iter__"):
      raise ValueError(f"{owner}takes no data: its first argument is update_freq (the "
                       "momentum comes from the training steps themselves). Pass e.g. "
                       "SNFSScheduler(update_freq=100).")
    prune_rate = check_fraction("prune_rate", prune_rate, owner=owner)
    try:
      parse_drop_fraction_schedule(prune_rate_schedule)
    except ValueError as error:
      raise ValueError(f"{owner}prune_rate_schedule: " + str(error).replace(
          "drop_fraction_schedule", "prune_rate_schedule")) from None
    momentum = check_fraction("momentum", momentum, high_open=True, owner=owner)
    if not isinstance(redistribution, (bool, np.bool_)):
      raise ValueError(f"{owner}redistribution must be True (SNFS: layer counts follow "
                       f"their mean momentum) or False (fixed counts), got "
                       f"{redistribution!r}.")
    super().__init__(update_freq, prune_rate, prune_rate_schedule, begin_step, end_step,
                     "zeros", seed, redistribution="momentum" if redistribution else None)
    self.prune_rate = prune_rate
    self.prune_rate_schedule = prune_rate_schedule
    self.momentum = momentum
    self._tap_momentum = momentum  # Growth needs the momentum even without redistribution.

  def _should_update(self, step):
    if not super()._should_update(step):
      return False
    if self._update_fn is None:  # Taps made at the first on_train_begin.
      if not getattr(self.model, "built", True):
        return False
      self._prepare(step)
    # Growth ranks by momentum: an update before any training step has fed
    # it (step 0, the first step of a resumed run) would rank zeros. Skip it.
    return all(int(t.tap.last_step.numpy()) >= 0 for t in self._targets)

  def _feature(self):
    return "SNFS (SNFSScheduler)"

  def _check_compressed(self, name, what):
    # docs/compressed_schedulers.md: why no exact O(nnz) form exists.
    why = ("it grows where the moving average of the dense gradient is largest, at "
           "inactive positions too: a state of the dense kernel's size, which compressed "
           "storage never holds")
    if self.redistribution is not None:
      why += ("; and it moves connections between layers, while a compressed layer built "
              "without capacity stores a fixed number of entries")
    raise ValueError(
        f"{name}: {what} is not supported with compressed storage (keras_rigl.layers "
        f"such as SparseDense): {why}; sparsify with storage=\"masked\" (the default) "
        "to train it, or use RigLScheduler(data, ...) on compressed layers.")

  def _grow_scores(self, step, source):
    return [abs(self._momentum(t)) for t in self._targets]

  def _non_finite_source(self):
    return "its weights or momentum"
