"""Keras callbacks that move the masks of SparseWrapper layers during `fit`.

* `RigLScheduler`: drop the weakest active weights, grow the connections with
  the largest dense gradient (Evci et al., 2020).
* `SETScheduler`: same drop, random growth (Mocanu et al., 2018).
* `MagnitudePruningScheduler`: dense-to-sparse gradual magnitude pruning (Zhu &
  Gupta, 2017), the baseline the RigL paper compares with.

All state lives in variables that Keras already saves: the masks (in the
wrappers) and the step (``optimizer.iterations``). An update is one compiled
`tf.function` that runs in cross-replica context under any `tf.distribute`
strategy, so every replica and worker ends with the same masks, weights and
optimizer slots. Between updates a callback reads the step counter only on the
batches where an update could be due.
"""

import math
import numbers
import threading
import warnings

import numpy as np
import tensorflow as tf

from keras_rigl import _keras
from keras_rigl import flops as _flops
from keras_rigl import redistribution as _redistribution
from keras_rigl._keras import keras
from keras_rigl.layers.scheduling import CompressedUpdater
from keras_rigl.masks import (check_min_fan_in, drop_count, name_seed, prune_mask,
                              update_mask)
from keras_rigl.schedules import (drop_fraction_at, is_update_step,
                                  parse_drop_fraction_schedule,
                                  polynomial_sparsity)
from keras_rigl.surgery import walk_layers
from keras_rigl.wrapper import SparseWrapper, capture_effective_weights

GROW_INIT_CHOICES = ("zeros", "random_normal", "random_uniform")
# Layer-wise redistribution of the regrown count (RigL's `redistribution`).
REDISTRIBUTION_CHOICES = (None, "momentum", "gradient")
# Momentum of the dense-gradient EMA behind redistribution="momentum" (SNFS's).
REDISTRIBUTION_MOMENTUM = 0.9
# Fraction of a run's steps after which RigL stops updating masks (the paper).
DEFAULT_END_FRACTION = 0.75
# Callable schedules are checked at every update step of the window up to this
# many steps at on_train_begin (and always at the update itself).
_MAX_SCHEDULE_CHECKS = 100_000


def _check_int(name, value, minimum, owner=""):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    example = minimum if isinstance(value, bool) or not isinstance(value, numbers.Real) \
        else max(minimum, int(value))
    raise ValueError(f"{owner}{name} must be an integer >= {minimum}, got {value!r}; "
                     f"pass e.g. {name}={example}.")
  return int(value)


def _check_fraction(name, value, low=0.0, high=1.0, high_open=False, owner=""):
  """A real number in [low, high] (or [low, high)); numpy scalars accepted."""
  interval = f"[{low:g}, {high:g}{')' if high_open else ']'}"
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
    raise ValueError(f"{owner}{name} must be a number in {interval}, got {value!r} "
                     f"of type {type(value).__name__}; pass a float, e.g. {name}=0.3.")
  value = float(value)
  if not (low <= value < high if high_open else low <= value <= high):
    raise ValueError(f"{owner}{name} must be a number in {interval}, got {value!r}.")
  return value


def _check_seed(seed, owner=""):
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ValueError(f"{owner}seed must be an integer, got {seed!r}; pass e.g. seed=0.")
  return int(seed)


class _Target:
  """One masked weight: its wrapper, variables, optimizer slots, RNG seed."""

  def __init__(self, wrapper, index, weight, mask, seed):
    self.wrapper = wrapper
    self.index = index
    self.weight = weight
    self.mask = mask
    self.name = f"{wrapper.layer.name}/{wrapper.weight_keys[index]}"
    seed_pair = name_seed(seed, self.name)
    # One int64 key from (seed, layer) for stateless RNG seeds [key, step].
    self.key = (seed_pair[0] << 31) | seed_pair[1]
    self.size = int(np.prod(weight.shape))
    self.slots = []
    self.max_update = None  # Static bound on moved connections (TPU).
    self.tap = None  # Its wrapper's GradientTap, when a scheduler enables one.


class _MaskScheduler(keras.callbacks.Callback):
  """Shared machinery: finding layers, timing updates, slot resets, logs.

  Timing: an update is due when ``optimizer.iterations`` (the number of
  optimizer steps taken) is an update step of the schedule. The callback
  reads that counter before every batch, so batches that did not advance it
  (skipped mixed-precision steps), restored checkpoints and several `fit`
  calls never shift, skip or repeat an update.

  Compiled once: the update is traced once per (model, optimizer), at the first
  `on_train_begin` (the optimizer's slots are created first if the optimizer
  is not built yet), and reused by later `fit` calls.
  """

  def __init__(self, update_freq, begin_step, end_step, seed):
    super().__init__()
    owner = f"{type(self).__name__}: "
    self.update_freq = _check_int("update_freq", update_freq, 1, owner)
    self.begin_step = _check_int("begin_step", begin_step, 0, owner)
    self.end_step = None if end_step is None else _check_int("end_step", end_step, 0, owner)
    if self.end_step is not None and self.end_step < self.begin_step:
      raise ValueError(f"{owner}end_step ({end_step}) must be >= begin_step ({begin_step}); "
                       "swap them or raise end_step.")
    self.seed = _check_seed(seed, owner)
    self._targets = None
    self._update_fn = None
    self._built_for = None      # (model, optimizer) the update was built for.
    self._slots_pending = False  # Slots appear only with the first step.
    self._trace_count = 0       # Python-side traces of the update (tests).
    self._end_step = self.end_step
    self._done_step = None
    self._quiet_batches = 0
    self._steps_per_execution = 1
    self.last_mask_change = 0.0
    self.last_update_step = None
    self.updates = 0
    # [(step, weight name)] of layer updates skipped for non-finite values.
    self.skipped_layers = []
    self._supports_tf_logs = True  # tf_keras: no per-batch numpy conversion.
    # Static shapes in the update (automatic under TPUStrategy); same result.
    self.static_shapes = False

  # --- set-up -------------------------------------------------------------

  def _find_targets(self):
    wrappers = [l for l in walk_layers(self.model) if isinstance(l, SparseWrapper)]
    # Compressed storage hook: keras_rigl.layers (SparseDense...) targets.
    self._compressed = CompressedUpdater(self.model, self.seed, type(self).__name__)
    if not wrappers and not self._compressed:
      raise ValueError(
          f"{type(self).__name__}: the model has no SparseWrapper layers (nor "
          "compressed keras_rigl.layers). Wrap layers with keras_rigl.SparseWrapper or "
          "call keras_rigl.sparsify(model, ...) before fit.")
    targets = []
    for wrapper in wrappers:
      for index, (weight, mask) in enumerate(wrapper.masked_weights):
        targets.append(_Target(wrapper, index, weight, mask, self.seed))
    return targets

  def _resolve_end_step(self):
    if self.end_step is not None:
      return self.end_step
    steps, epochs = self.params.get("steps"), self.params.get("epochs")
    if not steps or not epochs:
      raise ValueError(
          f"{type(self).__name__}(end_step=None) takes 75% of the run's steps, but "
          "Keras does not know how many steps this fit runs (no steps_per_epoch "
          "and a dataset of unknown length). Pass end_step=... explicitly.")
    return int(DEFAULT_END_FRACTION * steps * epochs)

  def on_train_begin(self, logs=None):
    spe = _keras.steps_per_execution(self.model)
    if spe > 1 and (self.update_freq % spe or self.begin_step % spe):
      raise ValueError(
          f"steps_per_execution={spe} does not divide update_freq={self.update_freq} "
          f"and begin_step={self.begin_step}: the callback only sees every {spe}th "
          "step and would miss updates. Choose update_freq and begin_step that are "
          f"multiples of {spe}.")
    steps = self.params.get("steps")
    if spe > 1 and steps and steps % spe:
      raise ValueError(
          f"steps_per_execution={spe} does not divide the {steps} steps of an epoch: "
          "the last execution of each epoch is shorter and shifts the steps the "
          "callback sees. Use steps_per_epoch (or a dataset length) that is a "
          f"multiple of {spe}.")
    self._end_step = self._resolve_end_step()
    self._steps_per_execution = spe
    self._quiet_batches = 0
    self._check_schedule()
    # A new fit may start from restored variables: an update due at the
    # current step has not happened to them.
    self._done_step = None
    step = int(self.model.optimizer.iterations.numpy())
    self._start_fit(step)
    if getattr(self.model, "built", True):
      self._prepare(step)

  def _check_schedule(self):
    """Raises before training if the schedule gives a bad value (hook)."""

  def _start_fit(self, step):
    """Per-fit set-up before the update is prepared (hook)."""

  def _prepare(self, step):
    """Builds and traces the update once per (model, optimizer)."""
    model, optimizer = self.model, self.model.optimizer
    if (self._update_fn is not None and self._built_for is not None and
        self._built_for[0] is model and self._built_for[1] is optimizer):
      return
    self._targets = self._find_targets()
    self._prepare_targets()
    with model.distribute_strategy.scope():
      slots_ready = _keras.build_optimizer(optimizer, model.trainable_variables)
    self._build_update()
    self._built_for = (model, optimizer)
    self._slots_pending = not slots_ready
    if slots_ready:
      self._trace(step)

  def _prepare_targets(self):
    """Per-model set-up once the targets are known (hook)."""

  def _trace(self, step):
    with self.model.distribute_strategy.scope():
      self._update_fn.get_concrete_function(
          tf.TensorSpec([], tf.int64), self._update_argument(step, check=False))

  def _build_update(self):
    optimizer = self.model.optimizer
    strategy = self.model.distribute_strategy
    # XLA on TPU needs static shapes: bound the moved connections per layer
    # by the (constant) number of ones times the largest drop fraction.
    static = self.static_shapes or isinstance(strategy, tf.distribute.TPUStrategy)
    for target in self._targets:
      target.slots = _keras.optimizer_slots(optimizer, target.weight)
      if static:
        ones = int(np.sum(np.asarray(_keras.variable_tensor(target.mask))))
        target.max_update = int(math.floor(ones * self._max_fraction()))
    self._compressed.build(optimizer)  # Compressed storage hook.
    self._metric_variables = _keras.metric_variables(self.model)
    # Every other piece of model state a training-mode forward pass may touch
    # (BatchNormalization statistics, RNG seeds...): saved and put back.
    skip = {id(v) for v in self._metric_variables}
    skip.update(id(t.mask) for t in self._targets)
    skip.update(id(v) for v in self._compressed.variables())  # Positions.
    self._state_variables = [v for v in self.model.non_trainable_variables
                             if id(v) not in skip]
    # No autograph: plain Python loops only, and errors raised while tracing
    # (e.g. RigL data that does not fit the model) keep their own message.
    self._update_fn = tf.function(self._update_step, reduce_retracing=True,
                                  autograph=False)

  # --- the update ---------------------------------------------------------

  def _new_masks(self, step, argument):
    """[(new_mask, grown) or (new_mask, grown, finite)] per target.

    `finite` (optional scalar bool) is False when the scores the masks come
    from hold NaN/Inf: that target's update is then skipped.
    """
    raise NotImplementedError

  def _grown_values(self, target, step, new_mask, grown):
    return tf.zeros_like(_keras.variable_tensor(target.weight))

  def _update_step(self, step, argument):
    self._trace_count += 1  # Runs only while tracing.
    results = self._new_masks(step, argument)
    changed_total = tf.constant(0.0, tf.float64)
    size_total = 0
    finite_flags = []
    for target, result in zip(self._targets, results):
      new_mask, grown = result[0], result[1]
      old_mask = _keras.variable_tensor(target.mask)
      weight = _keras.variable_tensor(target.weight)
      # Non-finite weights or scores: leave this target exactly as it is.
      finite = tf.reduce_all(tf.math.is_finite(weight))
      if len(result) > 2:
        finite = tf.logical_and(finite, result[2])
      grown = tf.logical_and(grown, finite)
      new_mask = tf.where(finite, new_mask, old_mask)
      changed = tf.not_equal(new_mask, old_mask)
      init = self._grown_values(target, step, new_mask, grown)
      new_weight = tf.where(grown, tf.cast(init, weight.dtype), weight) * new_mask
      target.weight.assign(tf.where(finite, new_weight, weight))
      target.mask.assign(new_mask)
      for slot in target.slots:
        value = _keras.variable_tensor(slot)
        slot.assign(tf.where(changed, tf.zeros_like(value), value))
      changed_total += tf.reduce_sum(tf.cast(changed, tf.float64))
      size_total += target.size
      finite_flags.append(finite)
    if self._compressed:  # Compressed storage hook (keras_rigl.layers).
      changed_total += self._compressed_update(step, argument)
      size_total += self._compressed.size
    finite = tf.stack(finite_flags) if finite_flags else tf.zeros([0], tf.bool)
    return changed_total / max(size_total, 1), finite

  def _compressed_update(self, step, argument):
    """Updates compressed layers; returns the changed mask entries (float64)."""
    return tf.constant(0.0, tf.float64)

  def _update_argument(self, step, check=True):
    return tf.constant(0.0, tf.float64)

  def _max_fraction(self):
    """Largest fraction of a layer's ones one update can move."""
    return 1.0

  def _should_update(self, step):
    return is_update_step(step, self.update_freq, self.begin_step, self._end_step)

  # The update due at step t (t optimizer steps done) runs when the next
  # step is about to start, in on_train_batch_begin: Keras 3 runs batch-end
  # hooks asynchronously only when no callback defines one, and checkpoints
  # written at the end of a step (or of an epoch) then hold the state before
  # the update, so a resumed run makes the same update at the same point. An
  # update due after the very last step of a fit happens at the start of the
  # next fit, if any.
  def on_train_batch_begin(self, batch, logs=None):
    # The step counter, not a batch counter, decides (batches drift from it:
    # skipped mixed-precision steps, restores). It grows by at most
    # steps_per_execution per batch, so it is read only when an update could
    # be due: no device read on most batches.
    if self._quiet_batches > 0:
      self._quiet_batches -= 1
      return
    step = int(self.model.optimizer.iterations.numpy())
    if step != self._done_step and self._should_update(step):
      self._run_update(step)
    self._quiet_batches = self._batches_before_due(step)

  def _next_update_step(self, step):
    """The first update step after `step`, None if unknown, inf if none."""
    first = max(step + 1, self.begin_step)
    candidate = -(-first // self.update_freq) * self.update_freq
    return candidate if candidate <= self._end_step else math.inf

  def _batches_before_due(self, step):
    """How many coming batches cannot reach the next update step."""
    upcoming = self._next_update_step(step)
    if upcoming is None:
      return 0
    if upcoming == math.inf:
      return math.inf
    spe = self._steps_per_execution
    return max(-(-(upcoming - step) // spe) - 1, 0)

  def _run_update(self, step):
    if self._update_fn is None or (self._slots_pending and step > 0):
      # Optimizer slots may only appear with the first step (tf_keras legacy
      # optimizers create them then): look them up again after step 0.
      self._built_for = None
      self._prepare(step)
      if self._slots_pending and step > 0:
        self._slots_pending = False
    argument = self._update_argument(step)
    with self.model.distribute_strategy.scope():
      change, finite = self._update_fn(tf.constant(step, tf.int64), argument)
    self._done_step = step
    self.last_mask_change = float(change)
    self.last_update_step = step
    self.updates += 1
    self._after_update(step)
    finite = np.asarray(finite)
    if not finite.all():
      names = [t.name for t, ok in zip(self._targets, finite) if not ok]
      self.skipped_layers.extend((step, name) for name in names)
      warnings.warn(
          f"{type(self).__name__}: skipped the mask update of {', '.join(names)} at "
          f"step {step}: {self._non_finite_source()} hold NaN or Inf. Those masks, "
          "weights and optimizer slots are unchanged; check the learning rate, the "
          "loss and the data.", RuntimeWarning, stacklevel=2)

  def _non_finite_source(self):
    return "its weights"

  def _after_update(self, step):
    """Bookkeeping after an update has run (hook)."""

  def _log(self, step, logs):
    if logs is not None:
      logs["mask_change"] = self.last_mask_change
      logs["skipped_updates"] = len(self.skipped_layers)

  def on_epoch_end(self, epoch, logs=None):
    self._log(int(self.model.optimizer.iterations.numpy()), logs)


class _DropGrowScheduler(_MaskScheduler):
  """Drop by magnitude, grow by a score: the common part of RigL and SET."""

  _compressed_grow = "rigl"  # Compressed storage hook: how they grow.
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
    self.drop_fraction = _check_fraction("drop_fraction", drop_fraction, owner=owner)
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
    if self.min_fan_in and self._compressed:
      names = sorted({t.weight.layer.name for t in self._compressed.targets})
      raise ValueError(
          f"{type(self).__name__}: min_fan_in={self.min_fan_in} is supported on the "
          f"masked storage only, and the model has compressed layers {names}. Use "
          "keras_rigl.sparsify(..., storage=\"masked\") or min_fan_in=0.")
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

  def _update_argument(self, step, check=True):
    """(drop fraction, source of grow scores: RigL's batch iterator, or None)."""
    return (tf.constant(self.current_drop_fraction(step, check), tf.float64), None)

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
    results = []
    for t, score in zip(self._targets, scores):
      new_mask, grown = update_mask(
          _keras.variable_tensor(t.mask), _keras.variable_tensor(t.weight),
          score, drop_fraction, max_update=t.max_update, min_fan_in=self.min_fan_in)
      results.append((new_mask, grown, tf.reduce_all(tf.math.is_finite(score))))
    return results

  # --- layer-wise redistribution --------------------------------------------

  def _prepare_targets(self):
    if self.redistribution is None and self._tap_momentum is None:
      return
    name, what = type(self).__name__, self._feature()
    if self._compressed:
      raise ValueError(
          f"{name}: {what} is not supported with compressed storage (keras_rigl.layers "
          "such as SparseDense); sparsify with storage=\"masked\" (the default) to "
          "train it.")
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
    source = self._momentum(target) if self.redistribution == "momentum" else score
    return _redistribution.mean_abs_over_active(source, mask)

  def _redistributed_masks(self, drop_fraction, scores):
    """Drop per layer; regrow the total, split by the layers' statistics."""
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
    capacity = [tf.where(ok, t.size - (n - d), 0)
                for t, ok, n, d in zip(targets, finite, n_active, n_drop)]
    statistics = [tf.where(ok, self._layer_statistic(t, s, m), tf.constant(0.0, tf.float64))
                  for t, ok, s, m in zip(targets, finite, scores, masks)]
    statistics = tf.stack(statistics)
    counts = _redistribution.bounded_regrowth(tf.stack(n_drop), statistics, tf.stack(capacity))
    # No statistic at all (momentum not fed yet: step 0, a resumed run): no
    # information to move counts by, so every layer regrows what it dropped.
    counts = tf.where(tf.reduce_sum(statistics) > 0, counts,
                      tf.cast(tf.stack(n_drop), counts.dtype))
    results = []
    for i, t in enumerate(targets):
      new_mask, grown = update_mask(masks[i], weights[i], scores[i], fractions[i],
                                    grow_count=counts[i])
      results.append((new_mask, grown, finite[i]))
    return results

  def _after_update(self, step):
    if self.redistribution is None:
      return
    counts = {t.name: int(np.sum(np.asarray(_keras.variable_tensor(t.mask)) > 0))
              for t in self._targets}
    self.count_history.append((step, counts))
    try:
      ratio = float(_flops.count_flops(self.model).ratio)
    except (TypeError, ValueError):
      ratio = None  # A model count_flops cannot read (e.g. subclassed).
    self.flops_history.append((step, ratio))

  def _compressed_update(self, step, argument):
    # RigL's _grow_scores (same trace, called just before) leaves the
    # compressed layers' inputs and output gradients in _compressed_data.
    return self._compressed.apply(step, argument[0], self._compressed_grow,
                                  getattr(self, "_compressed_data", None), self.grow_init)

  def _grown_values(self, target, step, new_mask, grown):
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


class RigLScheduler(_DropGrowScheduler):
  """RigL: every `update_freq` steps, move connections to large dense gradients.

  On an update step (``begin_step <= step <= end_step`` and ``step %
  update_freq == 0``, where step is ``optimizer.iterations``, the number of
  optimizer steps taken) each SparseWrapper weight drops
  ``floor(n_active * drop_fraction(step))`` active connections of smallest
  ``|W|`` and grows as many connections with the largest ``|dL/dW|``, the
  gradient of the training loss (compiled loss plus regularisation, training
  mode) w.r.t. the effective weights ``W * M``, summed over
  `grad_accumulation_steps` batches of `data` and over replicas. Grown weights
  start at `grow_init`; their optimizer slots (momentum, Adam moments, EMA...)
  are reset to zero, as are those of dropped ones.

  The extra forward pass leaves the model as it found it apart from masks,
  weights and slots: BatchNormalization statistics, RNG states and metrics are
  put back. A weight whose grow scores (or values) hold NaN/Inf skips that
  update (mask, weights and slots unchanged) with a RuntimeWarning naming it and
  the step; `skipped_layers` lists ``(step, name)`` and the epoch logs count
  them in ``skipped_updates``.

  `data` is checked at the first `on_train_begin` against the model's inputs
  and compiled loss (a ValueError that starts with "RigLScheduler data"), is
  repeated as needed (a short dataset never ends training), and its iterator
  is kept across `fit` calls. A run resumed from a checkpoint (new callback,
  new process) reads the same batches as an uninterrupted one, provided `data`
  yields the same sequence each time it is iterated (e.g. ``shuffle(...,
  seed=...)``).

  Args:
    data: a batched `tf.data.Dataset` of ``(x, y)`` / ``(x, y, sample_weight)``,
      usually the training set; or a Python iterable/iterator of such batches,
      which is read once, kept in memory and cycled (use a Dataset for large
      data; an endless generator would fill memory).
    update_freq: steps between mask updates.
    drop_fraction: initial fraction of active connections that move.
    drop_fraction_schedule: "cosine" (default), "constant", "exponential"
      / "exponential_<k>", or a callable step -> fraction in [0, 1].
    begin_step, end_step: first and last step at which masks may change;
      end_step=None is 75% of the run's total steps (needs a known length).
    grow_init: "zeros" (paper), "random_normal" or "random_uniform" (scaled by
      the standard deviation of the layer's surviving weights).
    grad_accumulation_steps: batches whose gradients are summed per update.
    seed: seed of the random parts (random grow_init).
    redistribution: None (default: every layer keeps its count), "gradient"
      or "momentum". With one of these, each layer still drops
      ``floor(n_active * drop_fraction)`` weights by magnitude, but the total
      dropped is regrown across layers in proportion to a per-layer
      statistic of its active weights (the reproducibility report's
      redistribution experiment, SNFS's rule): "gradient" is the mean
      ``|dL/dW|`` on the update's batch (no extra cost), "momentum" the mean
      ``|EMA of dL/dW|`` (momentum 0.9) of the dense gradient of every
      training step (see `keras_rigl.SNFSScheduler`). A layer regrows between
      half and twice what it dropped (`keras_rigl.redistribution.
      bounded_regrowth`: no update changes a layer abruptly); the rest goes
      to the others. The total count of
      ones over all sparse weights stays exact while layer counts (and so the
      inference FLOPs) move: `count_history` and `flops_history` hold
      ``(step, {weight: active count})`` and ``(step, inference FLOPs
      ratio)`` after every update. Masked storage only.
    min_fan_in: int >= 0 (default 0: the paper's update). If > 0, every output
      unit (last axis of a weight) keeps at least ``min(min_fan_in, its
      possible inputs)`` active inputs: the drop spares each unit's strongest
      ``min_fan_in`` connections, and units below the minimum are first
      refilled with their best-scoring inputs out of the update's growth
      budget (neediest first), so the count of ones stays exact (see
      `keras_rigl.masks.min_fan_in_update`; clamped per weight to
      ``n_active // units``). At high sparsity RigL otherwise cuts units off
      for good (a ReLU unit without inputs gets no gradient).
      Masked storage only, dynamic shapes only (not under TPUStrategy).

  Logs ``drop_fraction``, ``mask_change`` (fraction of mask entries that
  changed at the last update) and ``skipped_updates`` into the epoch logs;
  with `redistribution`, also ``active_weights`` (total count of ones) and
  ``flops_ratio`` (inference FLOPs / dense after the last update).

  Example:
  >>> import numpy as np, tensorflow as tf, keras_rigl as kr
  >>> from keras_rigl._keras import keras
  >>> x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
  >>> y = (x[:, 0] > 0).astype("int32")
  >>> train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  >>> model = kr.sparsify(keras.Sequential([keras.Input((12,)),
  ...     keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)]), 0.8)
  >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  >>> rigl = kr.RigLScheduler(train, update_freq=2, end_step=6)
  >>> history = model.fit(train, epochs=2, callbacks=[rigl], verbose=0)
  >>> rigl.updates, rigl.last_update_step
  (4, 6)
  """

  def __init__(self, data, update_freq=100, drop_fraction=0.3,
               drop_fraction_schedule="cosine", begin_step=0, end_step=None,
               grow_init="zeros", grad_accumulation_steps=1, seed=0,
               redistribution=None, min_fan_in=0):
    super().__init__(update_freq, drop_fraction, drop_fraction_schedule, begin_step,
                     end_step, grow_init, seed, redistribution=redistribution,
                     min_fan_in=min_fan_in)
    self.grad_accumulation_steps = _check_int("grad_accumulation_steps",
                                              grad_accumulation_steps, 1,
                                              "RigLScheduler: ")
    self.data = _as_dataset(data)
    self._iterator = None
    self._iterator_for = None  # The strategy the iterator was made for.
    self._consumed = 0         # Batches taken from the iterator so far.
    self._checked_for = None   # The model `data` was checked against.

  def _start_fit(self, step):
    if self._checked_for is not self.model:
      _check_rigl_data(self.data, self.model)
      self._checked_for = self.model
    # Resume: skip the batches earlier updates consumed, so an interrupted run
    # sees the same gradient batches as an uninterrupted one. Updates happened
    # at steps 0 .. step-1; the one due at `step` (if any) is still to come.
    consumed = self._updates_before(step - 1) * self.grad_accumulation_steps
    strategy = self.model.distribute_strategy
    if (self._iterator is not None and self._iterator_for is strategy and
        self._consumed == consumed):
      return  # Same position: keep the iterator (and its shuffle buffer).
    dataset = self.data.repeat()
    if consumed:
      dataset = dataset.skip(consumed)
    # One batch ready in the background, so an update does not wait for input.
    dataset = dataset.prefetch(1)
    self._iterator = iter(strategy.experimental_distribute_dataset(dataset))
    self._iterator_for = strategy
    self._consumed = consumed

  def _updates_before(self, step):
    """How many update steps there are in [0, step]."""
    first, last = self.begin_step, min(step, self._end_step)
    if last < first:
      return 0
    return last // self.update_freq - (first - 1) // self.update_freq

  def _update_argument(self, step, check=True):
    return (tf.constant(self.current_drop_fraction(step, check), tf.float64),
            self._iterator)

  def _run_update(self, step):
    try:
      super()._run_update(step)
    except tf.errors.OutOfRangeError:
      # Keras would read this as the end of the training data and stop.
      raise ValueError(
          "RigLScheduler data ran out of batches although it is repeated: it is "
          "empty or yields nothing on a second pass. Pass a dataset or iterable "
          "that yields batches every time it is iterated.") from None
    self._consumed += self.grad_accumulation_steps

  def _grow_scores(self, step, iterator):
    model = self.model
    strategy = model.distribute_strategy
    targets = self._targets
    position = {(id(t.wrapper), t.index): i for i, t in enumerate(targets)}
    optimizer = model.optimizer
    metric_variables = self._metric_variables
    compressed = self._compressed

    def replica_gradients(batch):
      x, y, sample_weight = _keras.unpack_batch(batch)
      # The extra forward pass must not show up in the epoch's loss/metrics.
      saved = [tf.identity(_keras.variable_tensor(v)) for v in metric_variables]
      with tf.GradientTape() as tape:
        try:
          with capture_effective_weights() as records, \
              compressed.capture() as c_records:
            y_pred = model(x, training=True)
          loss = _compute_loss(model, x, y, y_pred, sample_weight)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
          raise ValueError(_DATA_MISMATCH.format(error=error)) from error
        loss = _keras.scale_loss_for_gradients(optimizer, loss)
      tensors = [tensor for _, _, tensor in records]
      grads = tape.gradient(loss, tensors + compressed.outputs(c_records))
      grads, c_grads = grads[:len(tensors)], grads[len(tensors):]
      with tf.control_dependencies([loss]):
        for variable, value in zip(metric_variables, saved):
          variable.assign(value)
      totals = [tf.zeros(t.weight.shape, tf.float32) for t in targets]
      for (wrapper, index, _), grad in zip(records, grads):
        if grad is None:
          continue
        slot = position.get((id(wrapper), index))
        if slot is not None:  # A shared layer adds up all its uses.
          totals[slot] += tf.cast(tf.convert_to_tensor(grad), tf.float32)
      return totals, compressed.replica_data(c_records, c_grads)

    # BatchNormalization statistics, RNG seeds...: as they were before the pass.
    state = [tf.identity(_keras.variable_tensor(v)) for v in self._state_variables]
    totals = [tf.zeros(t.weight.shape, tf.float32) for t in targets]
    gathered = []
    for _ in range(self.grad_accumulation_steps):
      per_replica, c_per_replica = strategy.run(replica_gradients, args=(next(iterator),))
      for i, grad in enumerate(per_replica):
        totals[i] += strategy.reduce(tf.distribute.ReduceOp.SUM, grad, axis=None)
      gathered.append(compressed.gather(strategy, c_per_replica))
    # Compressed layers: rows of all batches and replicas (a^T d sums them).
    self._compressed_data = [tuple(tf.concat(parts, 0) for parts in zip(*per_target))
                             for per_target in zip(*gathered)]
    with tf.control_dependencies(totals):
      for variable, value in zip(self._state_variables, state):
        variable.assign(value)
    return [tf.abs(g) for g in totals]


class SETScheduler(_DropGrowScheduler):
  """SET: like RigL, but grows connections at random (Mocanu et al., 2018).

  Random growth comes from a stateless generator keyed by seed, step and layer,
  so every replica and worker grows the same connections. Takes RigLScheduler's
  arguments (`min_fan_in` included); `data` and `grad_accumulation_steps` are
  accepted and unused, so pass the others by keyword:
  ``SETScheduler(update_freq=100)``.

  Example:
  >>> import numpy as np, tensorflow as tf, keras_rigl as kr
  >>> from keras_rigl._keras import keras
  >>> x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
  >>> train = tf.data.Dataset.from_tensor_slices((x, x[:, :2])).batch(16)
  >>> model = kr.sparsify(keras.Sequential([keras.Input((12,)),
  ...     keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)]), 0.8)
  >>> model.compile("sgd", "mse")
  >>> set_ = kr.SETScheduler(update_freq=4, end_step=4)
  >>> history = model.fit(train, epochs=2, callbacks=[set_], verbose=0)
  >>> set_.updates
  2
  """

  def __init__(self, data=None, update_freq=100, drop_fraction=0.3,
               drop_fraction_schedule="cosine", begin_step=0, end_step=None,
               grow_init="zeros", grad_accumulation_steps=1, seed=0, min_fan_in=0):
    if isinstance(data, (numbers.Number, np.generic)):
      raise ValueError(
          f"SETScheduler got {data!r} as its first positional argument, which is "
          "`data` (unused by SET), not update_freq. Pass the numbers by keyword, "
          f"e.g. SETScheduler(update_freq={data!r}).")
    super().__init__(update_freq, drop_fraction, drop_fraction_schedule, begin_step,
                     end_step, grow_init, seed, min_fan_in=min_fan_in)
    _check_int("grad_accumulation_steps", grad_accumulation_steps, 1, "SETScheduler: ")

  _compressed_grow = "set"  # Compressed storage hook.

  def _grow_scores(self, step, source):
    return [tf.random.stateless_uniform(
        t.weight.shape, seed=tf.stack([tf.constant(t.key, tf.int64), step + (1 << 40)]))
            for t in self._targets]


class MagnitudePruningScheduler(_MaskScheduler):
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

  def __init__(self, initial_sparsity=0.0, final_sparsity=None, begin_step=0,
               end_step=None, update_freq=100, power=3, schedule=None):
    super().__init__(update_freq, begin_step, end_step, seed=0)
    owner = "MagnitudePruningScheduler: "
    self.initial_sparsity = _check_fraction("initial_sparsity", initial_sparsity,
                                            high_open=True, owner=owner)
    self.final_sparsity = None if final_sparsity is None else _check_fraction(
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
    return tf.constant(values, tf.float64)

  def _new_masks(self, step, sparsities):
    results = []
    for i, t in enumerate(self._targets):
      mask = _keras.variable_tensor(t.mask)
      new_mask = prune_mask(mask, _keras.variable_tensor(t.weight), sparsities[i],
                            max_update=t.max_update)
      results.append((new_mask, tf.zeros_like(new_mask, tf.bool)))
    return results


def _compute_loss(model, x, y, y_pred, sample_weight):
  """The compiled training loss plus regularisation losses."""
  if _keras.IS_KERAS3:
    return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                              training=True)
  return model.compute_loss(x, y, y_pred, sample_weight)


_DATA_HELP = ("a batched tf.data.Dataset of (x, y) batches, e.g. "
              "tf.data.Dataset.from_tensor_slices((x, y)).shuffle(10000).batch(128)")


class _CachedBatches:
  """Reads a Python iterator once and replays its batches on every pass.

  A generator over the iterator itself would yield only what is left of it on
  a second pass (nothing), so `repeat()` would replay the first batch only.
  """

  _END = object()

  def __init__(self, iterable):
    self._source = iter(iterable)
    self._cache = []
    self._exhausted = False
    self._lock = threading.Lock()

  def get(self, index):
    with self._lock:
      while index >= len(self._cache) and not self._exhausted:
        try:
          self._cache.append(next(self._source))
        except StopIteration:
          self._exhausted = True
      return self._cache[index] if index < len(self._cache) else self._END

  def __call__(self):
    index = 0
    while True:
      batch = self.get(index)
      if batch is self._END:
        return
      yield batch
      index += 1


def _as_dataset(data):
  """A tf.data.Dataset of batches from a Dataset or an iterable of batches."""
  if isinstance(data, tf.data.Dataset):
    return data
  if data is None:
    raise ValueError("RigLScheduler data is missing: pass " + _DATA_HELP +
                     " to take dense gradients from, usually the training set.")
  if isinstance(data, np.ndarray) or (
      isinstance(data, (tuple, list)) and data and isinstance(data[0], np.ndarray)):
    raise ValueError("RigLScheduler data got numpy arrays; pass batches instead: " +
                     _DATA_HELP + ".")
  if isinstance(data, (str, bytes, dict, numbers.Number, np.generic)):
    raise ValueError(f"RigLScheduler data must be {_DATA_HELP} or an iterable of "
                     f"batches, got {type(data).__name__}.")
  try:
    iter(data)
  except TypeError:
    raise ValueError(f"RigLScheduler data must be {_DATA_HELP} or an iterable of "
                     f"batches, got {type(data).__name__}.") from None
  batches = _CachedBatches(data)
  first = batches.get(0)
  if first is _CachedBatches._END:
    raise ValueError("RigLScheduler data is empty: the iterator yielded no batches. "
                     "Pass " + _DATA_HELP + ".")
  first = tf.nest.map_structure(tf.convert_to_tensor, first)
  # Any batch size (the last batch may be smaller).
  signature = tf.nest.map_structure(
      lambda t: tf.TensorSpec([None] + t.shape[1:].as_list() if t.shape.rank else [],
                              t.dtype), first)
  return tf.data.Dataset.from_generator(batches, output_signature=signature)


def _check_rigl_data(dataset, model):
  """Clear errors for RigL data that cannot give gradients for `model`.

  Looks at the element structure against the model's inputs, then reads one
  batch (an empty dataset must fail here, not end training at an update) and
  runs it through the model and the compiled loss in inference mode.
  """
  spec = dataset.element_spec
  if not isinstance(spec, tuple) or len(spec) not in (2, 3):
    kind = (f"a tuple of {len(spec)}" if isinstance(spec, tuple)
            else type(spec).__name__)
    raise ValueError(
        f"RigLScheduler data must yield (x, y) or (x, y, sample_weight) batches, but it "
        f"yields {kind}: RigL needs labels to compute the loss's gradient. Pass the "
        "labelled training set, e.g. tf.data.Dataset.from_tensor_slices((x, y)).batch(128).")
  x_spec, y_spec = spec[0], spec[1]
  for y_leaf in tf.nest.flatten(y_spec):
    if getattr(y_leaf, "dtype", None) == tf.string:
      raise ValueError(
          "RigLScheduler data has string labels; map them to integer class ids (or "
          "one-hot floats) as for fit, e.g. with tf.keras.layers.StringLookup.")
  _check_inputs(x_spec, model)
  cardinality = int(dataset.cardinality())
  if cardinality == 0:
    raise ValueError("RigLScheduler data is empty (0 batches); pass the training set, "
                     "batched, e.g. dataset.batch(128) on a non-empty dataset.")
  batch = None
  for batch in dataset.take(1):
    break
  if batch is None:
    raise ValueError("RigLScheduler data is empty (it yielded no batch); pass the "
                     "training set, batched, e.g. dataset.batch(128).")
  strategy = model.distribute_strategy
  if not (isinstance(strategy, tf.distribute.OneDeviceStrategy) or
          type(strategy).__name__ == "_DefaultDistributionStrategy"):
    # Distributed variables (metrics) cannot be updated eagerly in
    # cross-replica context: the traced update checks the rest.
    return
  # One batch through the model and the compiled loss (inference mode: no
  # state changes) catches what only shows with values (e.g. one-hot labels
  # for a sparse loss under tf_keras).
  x, y, sample_weight = _keras.unpack_batch(batch)
  try:
    with strategy.scope():
      y_pred = model(x, training=False)
      _compute_loss(model, x, y, y_pred, sample_weight)
  except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
    raise ValueError(_DATA_MISMATCH.format(error=error)) from error


_DATA_MISMATCH = (
    "RigLScheduler data does not fit the model or its compiled loss: {error}\nFix: "
    "give RigLScheduler batches like the ones fit trains on (same features and "
    "label format, e.g. integer labels for a sparse loss).")


def _input_names(model):
  names = getattr(model, "input_names", None)
  if names:
    return list(names)
  return [getattr(t, "name", "").split(":")[0] for t in model.inputs]


def _check_inputs(x_spec, model):
  inputs = getattr(model, "inputs", None)
  try:
    inputs = list(inputs) if inputs else None
  except TypeError:
    inputs = None
  if not inputs:
    return  # Subclassed model: the traced forward pass checks the data.
  names = _input_names(model)
  if isinstance(x_spec, dict):
    if set(x_spec) != set(names):
      raise ValueError(
          f"RigLScheduler data yields x as a dict with keys {sorted(x_spec)}, but the "
          f"model's inputs are named {names}; key the features by the input names.")
    specs = [x_spec[name] for name in names]
  else:
    specs = tf.nest.flatten(x_spec)
    if len(specs) != len(inputs):
      raise ValueError(
          f"RigLScheduler data yields {len(specs)} input tensor(s) per batch, but the "
          f"model takes {len(inputs)} ({names}); yield x with one tensor per model input.")
  for name, spec, tensor in zip(names, specs, inputs):
    expected = tuple(tensor.shape)
    got = spec.shape
    if got.rank is None:
      continue
    if got.rank == len(expected) - 1:
      raise ValueError(
          f"RigLScheduler data is not batched: input {name!r} has shape {tuple(got)} "
          f"where the model expects batches of shape {expected}. Call .batch(...) on "
          "the dataset, e.g. dataset.batch(128).")
    if got.rank != len(expected) or any(
        e is not None and g is not None and e != g
        for e, g in zip(expected[1:], got.as_list()[1:])):
      raise ValueError(
          f"RigLScheduler data has the wrong feature shape for input {name!r}: "
          f"batches of shape {tuple(got)}, the model expects {expected}. Pass the "
          "same features fit trains on.")
