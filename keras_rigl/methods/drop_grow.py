"""The drop/grow base common to RigL, SET and SNFS.

Every update each sparse weight drops ``floor(drop_fraction(step) *
n_active)`` active connections of smallest ``|W|`` and grows as many inactive
ones of highest score; a method says only where the scores come from
(`_grow_scores(step, source)`: the dense gradient for RigL, noise for SET,
momentum for SNFS). Optional layer-wise redistribution moves the regrown count
between layers by a per-layer statistic (the momentum one feeds a
`GradientTap` per masked weight at every training step).

The per-target update stays a function of ``(step, argument)`` over
``self._targets`` (`_new_masks`), so that it can run inside the compiled
update as well as from the callback.
"""

import math

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import backend
from keras_rigl import flops as _flops
from keras_rigl import portable_masks
from keras_rigl.masks import check_min_fan_in, drop_count, update_mask
from keras_rigl.methods.base import MaskScheduler
from keras_rigl.methods.validation import check_fraction
from keras_rigl.methods.timing import drop_fraction_at, parse_drop_fraction_schedule

GROW_INIT_CHOICES = ("zeros", "random_normal", "random_uniform")
# Layer-wise redistribution of the regrown count (RigL's `redistribution`).
REDISTRIBUTION_CHOICES = (None, "momentum", "gradient")
# Momentum of the dense-gradient EMA behind redistribution="momentum" (SNFS's).
REDISTRIBUTION_MOMENTUM = 0.9
# Callable schedules are checked at every update step of the window up to this
# many steps at on_train_begin (and always at the update itself).
_MAX_SCHEDULE_CHECKS = 100_000


class DropGrowScheduler(MaskScheduler):
  """Drop by magnitude, grow by a score: the common part of RigL and SET."""

  _schedule_arg = "drop_fraction_schedule"  # Its name in error messages.

  def __init__(self, update_freq=100, drop_fraction=0.3,
               drop_fraction_schedule="cosine", begin_step=0, end_step=None,
               grow_init="zeros", seed=0, redistribution=None, min_fan_in=0):
    super().__init__(update_freq, begin_step, end_step, seed)
    owner = f"{type(self).__name__}: "
    if redistribution is not None and not (isinstance(redistribution, str) and
                                           redistribution in REDISTRIBUTION_CHOICES):
      raise ValueError(
          f"{owner}redistribution must be None, 'momentum' or 'gradient', got "
          f"{redistribution!r}; e.g. redistribution='momentum' (layer counts follow "
          "the mean |momentum| of their dense gradients) or None (fixed counts).")
    self.redistribution = redistribution
    # Momentum of the per-step dense-gradient EMA, None if none is needed.
    self._tap_momentum = REDISTRIBUTION_MOMENTUM if redistribution == "momentum" else None
    # With redistribution: [(step, inference FLOPs ratio)] and
    # [(step, {weight name: active count})] after every update.
    self.flops_history = []
    self.count_history = []
    self.min_fan_in = check_min_fan_in(min_fan_in, owner)
    if self.min_fan_in and redistribution is not None:
      raise ValueError(
          f"{owner}min_fan_in={self.min_fan_in} cannot be combined with "
          f"redistribution={redistribution!r} yet; use one of them.")
    self.drop_fraction = check_fraction("drop_fraction", drop_fraction, owner=owner)
    parse_drop_fraction_schedule(drop_fraction_schedule)
    if not isinstance(grow_init, str) or grow_init not in GROW_INIT_CHOICES:
      raise ValueError(f"{owner}grow_init must be one of {GROW_INIT_CHOICES}, "
                       f"got {grow_init!r}.")
    self.drop_fraction_schedule = drop_fraction_schedule
    self.grow_init = grow_init
    if callable(drop_fraction_schedule):
      # What is known before fit: the value at begin_step.
      self._checked_fraction(begin_step)

  def _find_targets(self):
    targets = super()._find_targets()
    self._compressed.min_fan_in = self.min_fan_in  # Compressed storage hook.
    return targets

  def _max_fraction(self):
    if callable(self.drop_fraction_schedule):
      return 1.0
    return self.drop_fraction  # Every named schedule starts at its maximum.

  def _checked_fraction(self, step):
    """The callable schedule's value at `step`, refused unless in [0, 1]."""
    value = self.drop_fraction_schedule(step)
    try:
      fraction = float(value)
    except (TypeError, ValueError):
      fraction = None
    if fraction is None or not 0.0 <= fraction <= 1.0:  # NaN fails too.
      raise ValueError(
          f"{type(self).__name__}: {self._schedule_arg} returned {value!r} at step "
          f"{step}; it must return a fraction in [0, 1] at every update step (e.g. "
          "clip it: lambda step: min(max(f(step), 0.0), 1.0)).")
    return fraction

  def _check_schedule(self):
    if not callable(self.drop_fraction_schedule):
      return
    first = -(-self.begin_step // self.update_freq) * self.update_freq
    for step in range(first, self._end_step + 1, self.update_freq)[:_MAX_SCHEDULE_CHECKS]:
      self._checked_fraction(step)

  def current_drop_fraction(self, step, check=True):
    """Drop fraction the schedule gives at `step` (0 outside the window)."""
    end = self._end_step if self._end_step is not None else self.end_step
    if end is None or not self.begin_step <= step <= end:
      return 0.0
    if callable(self.drop_fraction_schedule) and check:
      return self._checked_fraction(step)
    return drop_fraction_at(step, self.drop_fraction, self.drop_fraction_schedule,
                            self.begin_step, end)

  def in_step_argument(self, step, drop_fraction, gradients):
    return (drop_fraction, gradients)

  def drop_fraction_tensor(self, step, end_step):
    """float64 drop fraction at `step` computed in the graph (named schedules)."""
    if callable(self.drop_fraction_schedule):
      raise ValueError(
          f"{type(self).__name__}: a callable {self._schedule_arg} over more than "
          "100000 update steps cannot be tabulated for the in-step update; use a "
          "named schedule or a larger update_freq.")
    kind, exponent = parse_drop_fraction_schedule(self.drop_fraction_schedule)
    initial = tf.constant(self.drop_fraction, tf.float64)
    if kind == "constant":
      return initial
    span = float(max(end_step - self.begin_step, 1))
    progress = tf.clip_by_value(tf.cast(step - self.begin_step, tf.float64), 0.0,
                                span) / span
    if kind == "cosine":
      return initial * 0.5 * (1.0 + tf.cos(math.pi * progress))
    return initial * tf.pow(1.0 - progress, exponent)

  def _update_argument(self, step, check=True):
    """(drop fraction, source of grow scores: RigL's batch iterator, or None)."""
    return (self._scalar(self.current_drop_fraction(step, check)), None)

  def _log(self, step, logs):
    super()._log(step, logs)
    if logs is not None:
      logs["drop_fraction"] = self.current_drop_fraction(step, check=False)
      if self.count_history:
        logs["active_weights"] = sum(self.count_history[-1][1].values())
      if self.flops_history and self.flops_history[-1][1] is not None:
        logs["flops_ratio"] = self.flops_history[-1][1]

  def _grow_scores(self, step, source):
    raise NotImplementedError

  def _non_finite_source(self):
    return "its weights or grow scores"

  def _new_masks(self, step, argument):
    drop_fraction, source = argument
    scores = self._grow_scores(step, source)
    if self.redistribution is not None:  # Layer counts move (SNFS, RigL option).
      return self._redistributed_masks(drop_fraction, scores)
    if not backend.IS_TENSORFLOW:  # JAX / PyTorch: the keras.ops rule.
      ops = _keras.keras.ops
      results = []
      for t, score in zip(self._targets, scores):
        score = ops.convert_to_tensor(score)
        new_mask, grown = portable_masks.min_fan_in_update(
            _keras.variable_tensor(t.mask), _keras.variable_tensor(t.weight), score,
            drop_fraction, self.min_fan_in)
        results.append((new_mask, grown, bool(ops.all(ops.isfinite(score)))))
      return results
    results = []
    for t, score in zip(self._targets, scores):
      new_mask, grown = update_mask(
          _keras.variable_tensor(t.mask), _keras.variable_tensor(t.weight),
          score, drop_fraction, max_update=t.max_update, min_fan_in=self.min_fan_in)
      results.append((new_mask, grown, tf.reduce_all(tf.math.is_finite(score))))
    return results

  # --- layer-wise redistribution --------------------------------------------

  def _prepare_targets(self):
    if self.redistribution is not None or self._tap_momentum is not None:
      backend.require_tensorflow(
          f"{type(self).__name__}: {self._feature()}",
          "Use redistribution=None (RigL, SET) on this backend.")
    if self.redistribution is None and self._tap_momentum is None:
      return
    name, what = type(self).__name__, self._feature()
    if self._compressed:
      self._check_compressed(name, what)
    strategy = self.model.distribute_strategy
    if self.static_shapes or isinstance(strategy, tf.distribute.TPUStrategy):
      raise ValueError(
          f"{name}: {what} moves layer counts, which needs dynamic shapes; it does not "
          "run with static_shapes=True or under TPUStrategy. Use a GPU/CPU strategy "
          "or redistribution=None.")
    if self._tap_momentum is not None:
      self._enable_gradient_taps()

  def _feature(self):
    """How errors name what needs redistribution / gradient taps."""
    return f"redistribution={self.redistribution!r}"

  def _check_compressed(self, name, what):
    """Compressed layers take redistribution when built with capacity."""
    missing = self._compressed.without_capacity()
    if missing:
      raise ValueError(
          f"{name}: {what} moves connections between layers, and the compressed "
          f"weights {missing} store a fixed number of entries (built without "
          "capacity). Give them room: keras_rigl.sparsify(..., storage='compressed', "
          "capacity=1.25) or SparseDense(..., capacity=1.25) (slots for 25% more "
          "entries); or sparsify with storage=\"masked\" (the default).")

  def _enable_gradient_taps(self):
    """Makes every wrapper feed a dense-gradient EMA from the training pass."""
    model = self.model
    created = False
    taps = {}
    with model.distribute_strategy.scope():
      for t in self._targets:
        if id(t.wrapper) not in taps:
          taps[id(t.wrapper)], new = t.wrapper.enable_gradient_taps(
              self._tap_momentum, model.optimizer.iterations)
          created = created or new
        t.tap = taps[id(t.wrapper)][t.index]
      if self._compressed:  # Compressed layers (with capacity): a tap on the values.
        created = self._compressed.enable_gradient_taps(
            self._tap_momentum, model.optimizer.iterations) or created
    if created:
      # A train function traced before (an earlier fit) does not feed the new
      # taps: make it again (Keras 3 and tf_keras both read the attribute at
      # every step).
      function = model.make_train_function(force=True)
      if function is not None:
        model.train_function = function

  def _momentum(self, target):
    """The dense-gradient EMA of `target`, summed over replicas."""
    return tf.convert_to_tensor(target.tap.buffer)

  def _layer_statistic(self, target, score, mask):
    # TensorFlow-only, imported on use (it imports TensorFlow).
    from keras_rigl import redistribution as _redistribution  # pylint: disable=g-import-not-at-top
    source = self._momentum(target) if self.redistribution == "momentum" else score
    return _redistribution.mean_abs_over_active(source, mask)

  def _redistributed_masks(self, drop_fraction, scores):
    """Drop per layer; regrow the total, split by the layers' statistics."""
    from keras_rigl import redistribution as _redistribution  # pylint: disable=g-import-not-at-top
    targets = self._targets
    masks = [_keras.variable_tensor(t.mask) for t in targets]
    weights = [_keras.variable_tensor(t.weight) for t in targets]
    finite = [tf.logical_and(tf.reduce_all(tf.math.is_finite(s)),
                             tf.reduce_all(tf.math.is_finite(w)))
              for s, w in zip(scores, weights)]
    # A layer with NaN/Inf is skipped: it neither drops nor grows.
    fractions = [tf.where(ok, tf.cast(drop_fraction, tf.float64), tf.constant(0.0, tf.float64))
                 for ok in finite]
    n_active = [tf.reduce_sum(tf.cast(m > 0, tf.int32)) for m in masks]
    n_drop = [drop_count(n, f) for n, f in zip(n_active, fractions)]
    statistics = [tf.where(ok, self._layer_statistic(t, s, m), tf.constant(0.0, tf.float64))
                  for t, ok, s, m in zip(targets, finite, scores, masks)]
    sizes = [t.size for t in targets]
    # Compressed layers (built with capacity) take part with their live
    # counts, their statistic over the live entries, and their slots as size.
    compressed = []
    if self._compressed:
      compressed = self._compressed.redistribution_inputs(
          drop_fraction, getattr(self, "_compressed_data", None), self.redistribution)
      for count, nominal, statistic, slots, _ in compressed:
        n_active.append(count)
        n_drop.append(nominal)
        statistics.append(statistic)
        sizes.append(slots)
    statistics = tf.stack(statistics)
    # Every layer regrows its nominal drop (as without redistribution); the
    # counts move through how many each one drops (redistributed_drops).
    drops = _redistribution.redistributed_drops(
        tf.stack(n_drop), statistics, tf.stack(n_active), sizes)
    # No statistic at all (momentum not fed yet: step 0, a resumed run): no
    # information to move counts by, so every layer drops its nominal count.
    drops = tf.where(tf.reduce_sum(statistics) > 0, drops,
                     tf.cast(tf.stack(n_drop), drops.dtype))
    # The compressed update (later in the same trace) drops / grows these.
    first = len(targets)
    self._compressed_counts = [(drops[first + i], n_drop[first + i])
                               for i in range(len(compressed))] or None
    results = []
    for i, t in enumerate(targets):
      new_mask, grown = update_mask(masks[i], weights[i], scores[i], fractions[i],
                                    grow_count=n_drop[i], n_drop=drops[i])
      results.append((new_mask, grown, finite[i]))
    return results

  def _after_update(self, step):
    if self.redistribution is None:
      return
    counts = {t.name: int(np.sum(np.asarray(_keras.variable_tensor(t.mask)) > 0))
              for t in self._targets}
    if self._compressed:
      counts.update(self._compressed.live_counts())
    self.count_history.append((step, counts))
    try:
      ratio = float(_flops.count_flops(self.model).ratio)
    except (TypeError, ValueError):
      ratio = None  # A model count_flops cannot read (e.g. subclassed).
    self.flops_history.append((step, ratio))

  def resume_state(self):
    meta, arrays = super().resume_state()
    meta["count_history"] = [[step, counts] for step, counts in self.count_history]
    meta["flops_history"] = [[step, ratio] for step, ratio in self.flops_history]
    for t in self._tapped_targets():
      # EMA taps (SNFS, momentum redistribution) carry state between steps;
      # the in-step update's StepGradientTap holds none between updates.
      if callable(getattr(t.tap, "state", None)):
        buffer, last_step = t.tap.state()
        arrays[f"tap/{t.name}/buffer"] = buffer
        arrays[f"tap/{t.name}/last_step"] = last_step
    return meta, arrays

  def _tapped_targets(self):
    """Masked and compressed targets (either may hold a gradient tap)."""
    compressed = self._compressed.targets if getattr(self, "_compressed", None) else []
    return list(self._targets or ()) + list(compressed)

  def restore_resume_state(self, meta, arrays):
    super().restore_resume_state(meta, arrays)
    self.count_history = [(int(step), dict(counts))
                          for step, counts in meta.get("count_history", [])]
    self.flops_history = [(int(step), ratio) for step, ratio in meta.get("flops_history", [])]
    with backend.strategy_scope(self.model):
      for t in self._tapped_targets():
        key = f"tap/{t.name}/buffer"
        if callable(getattr(t.tap, "restore", None)) and key in arrays:
          t.tap.restore(arrays[key], arrays[f"tap/{t.name}/last_step"])

  def _compressed_update(self, step, argument):
    # RigL's _grow_scores (same trace, called just before) leaves the
    # compressed layers' inputs and output gradients in _compressed_data.
    # Without that data (SET, random-growth methods) growth is random.
    # With redistribution, _redistributed_masks (same trace, just before) leaves
    # each compressed weight's (drop, grow) counts in _compressed_counts.
    counts = getattr(self, "_compressed_counts", None) if self.redistribution else None
    return self._compressed.apply(step, argument[0],
                                  getattr(self, "_compressed_data", None), self.grow_init,
                                  counts)

  def _grown_values(self, target, step, new_mask, grown):
    if not backend.IS_TENSORFLOW:
      return self._portable_grown_values(target, step, new_mask, grown)
    weight = _keras.variable_tensor(target.weight)
    if self.grow_init == "zeros":
      return tf.zeros_like(weight)
    # Scale new weights like the layer's surviving ones.
    kept = tf.cast(tf.logical_and(new_mask > 0, tf.logical_not(grown)), weight.dtype)
    count = tf.maximum(tf.reduce_sum(kept), 1.0)
    std = tf.sqrt(tf.reduce_sum(tf.square(weight * kept)) / count)
    seed = tf.stack([tf.constant(target.key, tf.int64), step])
    if self.grow_init == "random_normal":
      noise = tf.random.stateless_normal(tf.shape(weight), seed=seed, dtype=weight.dtype)
    else:
      noise = tf.random.stateless_uniform(tf.shape(weight), seed=seed, minval=-math.sqrt(3),
                                          maxval=math.sqrt(3), dtype=weight.dtype)
    return noise * std

  def _portable_grown_values(self, target, step, new_mask, grown):
    """`_grown_values` on JAX / PyTorch: the same TensorFlow stateless noise."""
    ops = _keras.keras.ops
    weight = _keras.variable_tensor(target.weight)
    if self.grow_init == "zeros":
      return ops.zeros_like(weight)
    kept = ops.cast(ops.logical_and(ops.greater(new_mask, 0), ops.logical_not(grown)),
                    weight.dtype)
    count = ops.maximum(ops.sum(kept), 1.0)
    std = ops.sqrt(ops.sum(ops.square(ops.multiply(weight, kept))) / count)
    seed = (target.key, int(step))
    dtype = _keras.keras.backend.standardize_dtype(weight.dtype)
    if self.grow_init == "random_normal":
      noise = backend.host_random_normal(weight.shape, seed, dtype)
    else:
      noise = backend.host_random_uniform_range(weight.shape, seed, -math.sqrt(3),
                                                math.sqrt(3), dtype)
    return ops.multiply(ops.convert_to_tensor(noise), std)
