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
optimizer slots. Between updates a callback only reads the step counter.
"""

import math

import numpy as np
import tensorflow as tf

from keras_rigl import _keras
from keras_rigl._keras import keras
from keras_rigl.layers.scheduling import CompressedUpdater
from keras_rigl.masks import name_seed, prune_mask, update_mask
from keras_rigl.schedules import (drop_fraction_at, is_update_step,
                                  parse_drop_fraction_schedule,
                                  polynomial_sparsity)
from keras_rigl.surgery import walk_layers
from keras_rigl.wrapper import SparseWrapper, capture_effective_weights

GROW_INIT_CHOICES = ("zeros", "random_normal", "random_uniform")
# Fraction of a run's steps after which RigL stops updating masks (the paper).
DEFAULT_END_FRACTION = 0.75


def _check_int(name, value, minimum):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
  return int(value)


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


class _MaskScheduler(keras.callbacks.Callback):
  """Shared machinery: finding layers, timing updates, slot resets, logs."""

  def __init__(self, update_freq, begin_step, end_step, seed):
    super().__init__()
    self.update_freq = _check_int("update_freq", update_freq, 1)
    self.begin_step = _check_int("begin_step", begin_step, 0)
    self.end_step = None if end_step is None else _check_int("end_step", end_step, 0)
    if self.end_step is not None and self.end_step < self.begin_step:
      raise ValueError(f"end_step ({end_step}) must be >= begin_step ({begin_step}).")
    self.seed = int(seed)
    self._targets = None
    self._update_fn = None
    self._end_step = self.end_step
    self.last_mask_change = 0.0
    self.last_update_step = None
    self.updates = 0
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
    self._targets = self._find_targets()
    self._end_step = self._resolve_end_step()
    self._epoch_start = int(self.model.optimizer.iterations.numpy())
    self._update_fn = None  # Slots exist only once the optimizer is built.
    self._built_before_training = False

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
    self._metric_variables = [v for m in self.model.metrics for v in m.variables]
    self._update_fn = tf.function(self._update_step, reduce_retracing=True)

  # --- the update ---------------------------------------------------------

  def _new_masks(self, step, argument):
    """[(new_mask, grown)] per target; implemented by each scheduler."""
    raise NotImplementedError

  def _grown_values(self, target, step, new_mask, grown):
    return tf.zeros_like(_keras.variable_tensor(target.weight))

  def _update_step(self, step, argument):
    results = self._new_masks(step, argument)
    changed_total = tf.constant(0.0, tf.float64)
    size_total = 0
    for target, (new_mask, grown) in zip(self._targets, results):
      old_mask = _keras.variable_tensor(target.mask)
      weight = _keras.variable_tensor(target.weight)
      changed = tf.not_equal(new_mask, old_mask)
      init = self._grown_values(target, step, new_mask, grown)
      new_weight = tf.where(grown, tf.cast(init, weight.dtype), weight) * new_mask
      target.weight.assign(new_weight)
      target.mask.assign(new_mask)
      for slot in target.slots:
        value = _keras.variable_tensor(slot)
        slot.assign(tf.where(changed, tf.zeros_like(value), value))
      changed_total += tf.reduce_sum(tf.cast(changed, tf.float64))
      size_total += target.size
    if self._compressed:  # Compressed storage hook (keras_rigl.layers).
      changed_total += self._compressed_update(step, argument)
      size_total += self._compressed.size
    return changed_total / size_total

  def _compressed_update(self, step, argument):
    """Updates compressed layers; returns the changed mask entries (float64)."""
    return tf.constant(0.0, tf.float64)

  def _update_argument(self, step):
    return tf.constant(0.0, tf.float64)

  def _max_fraction(self):
    """Largest fraction of a layer's ones one update can move."""
    return 1.0

  def _should_update(self, step):
    return is_update_step(step, self.update_freq, self.begin_step, self._end_step)

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = int(self.model.optimizer.iterations.numpy())

  # The update due after step t runs when step t + 1 is about to start, in
  # on_train_batch_begin: Keras 3 runs batch-end hooks asynchronously only
  # when no callback defines one, and checkpoints written at the end of step
  # t (or of an epoch) then hold the state before the update, so a resumed
  # run makes the same update at the same point. An update due after the
  # very last step of a fit happens at the start of the next fit, if any.
  def on_train_batch_begin(self, batch, logs=None):
    # `batch` counts the steps this epoch has finished (also with
    # steps_per_execution): no device read unless an update looks due, and
    # then the counter confirms it (skipped mixed-precision steps do not
    # advance it).
    step = self._epoch_start + batch
    if not self._should_update(step):
      return
    step = int(self.model.optimizer.iterations.numpy())
    if not self._should_update(step):
      return
    if self._update_fn is None or self._built_before_training:
      # Optimizer slots may only appear with the first step (tf_keras builds
      # the optimizer then): look them up again after an update at step 0.
      self._build_update()
      self._built_before_training = step == 0
    with self.model.distribute_strategy.scope():
      change = self._update_fn(tf.constant(step, tf.int64), self._update_argument(step))
    self.last_mask_change = float(change)
    self.last_update_step = step
    self.updates += 1

  def _log(self, step, logs):
    if logs is not None:
      logs["mask_change"] = self.last_mask_change

  def on_epoch_end(self, epoch, logs=None):
    self._log(int(self.model.optimizer.iterations.numpy()), logs)


class _DropGrowScheduler(_MaskScheduler):
  """Drop by magnitude, grow by a score: the common part of RigL and SET."""

  _compressed_grow = "rigl"  # Compressed storage hook: how they grow.

  def __init__(self, update_freq=100, drop_fraction=0.3,
               drop_fraction_schedule="cosine", begin_step=0, end_step=None,
               grow_init="zeros", seed=0):
    super().__init__(update_freq, begin_step, end_step, seed)
    if not isinstance(drop_fraction, (int, float)) or not 0.0 <= drop_fraction <= 1.0:
      raise ValueError(f"drop_fraction must be a number in [0, 1], got {drop_fraction!r}.")
    parse_drop_fraction_schedule(drop_fraction_schedule)
    if grow_init not in GROW_INIT_CHOICES:
      raise ValueError(f"grow_init must be one of {GROW_INIT_CHOICES}, got {grow_init!r}.")
    self.drop_fraction = float(drop_fraction)
    self.drop_fraction_schedule = drop_fraction_schedule
    self.grow_init = grow_init

  def _max_fraction(self):
    if callable(self.drop_fraction_schedule):
      return 1.0
    return self.drop_fraction  # Every named schedule starts at its maximum.

  def current_drop_fraction(self, step):
    """Drop fraction the schedule gives at `step` (0 outside the window)."""
    end = self._end_step if self._end_step is not None else self.end_step
    if end is None or not self.begin_step <= step <= end:
      return 0.0
    return drop_fraction_at(step, self.drop_fraction, self.drop_fraction_schedule,
                            self.begin_step, end)

  def _update_argument(self, step):
    """(drop fraction, source of grow scores: RigL's batch iterator, or None)."""
    return (tf.constant(self.current_drop_fraction(step), tf.float64), None)

  def _log(self, step, logs):
    super()._log(step, logs)
    if logs is not None:
      logs["drop_fraction"] = self.current_drop_fraction(step)

  def _grow_scores(self, step, source):
    raise NotImplementedError

  def _new_masks(self, step, argument):
    drop_fraction, source = argument
    scores = self._grow_scores(step, source)
    return [update_mask(_keras.variable_tensor(t.mask), _keras.variable_tensor(t.weight),
                        score, drop_fraction, max_update=t.max_update)
            for t, score in zip(self._targets, scores)]

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
  update_freq == 0``, where step is ``optimizer.iterations``) each SparseWrapper
  weight drops ``floor(n_active * drop_fraction(step))`` active connections of
  smallest ``|W|`` and grows as many connections with the largest ``|dL/dW|``,
  the gradient of the training loss (compiled loss plus regularisation, training
  mode) w.r.t. the effective weights ``W * M``, summed over
  `grad_accumulation_steps` batches of `data` and over replicas. Grown weights
  start at `grow_init`; their optimizer slots (momentum, Adam moments, EMA...)
  are reset to zero, as are those of dropped ones.

  Args:
    data: a batched `tf.data.Dataset` (repeated as needed) or an iterator of
      batches ``(x, y)`` / ``(x, y, sample_weight)``; usually the training set.
    update_freq: steps between mask updates.
    drop_fraction: initial fraction of active connections that move.
    drop_fraction_schedule: "cosine" (default), "constant", "exponential"
      / "exponential_<k>", or a callable step -> fraction.
    begin_step, end_step: first and last step at which masks may change;
      end_step=None is 75% of the run's total steps (needs a known length).
    grow_init: "zeros" (paper), "random_normal" or "random_uniform" (scaled by
      the standard deviation of the layer's surviving weights).
    grad_accumulation_steps: batches whose gradients are summed per update.
    seed: seed of the random parts (random grow_init).

  Logs ``drop_fraction`` and ``mask_change`` (fraction of mask entries that
  changed at the last update) into the batch and epoch logs.

  Example:
  >>> sparse = keras_rigl.sparsify(model, 0.9, "erk")
  >>> sparse.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
  >>> rigl = keras_rigl.RigLScheduler(train_ds, update_freq=100)
  >>> sparse.fit(train_ds, epochs=5, callbacks=[rigl])
  """

  def __init__(self, data, update_freq=100, drop_fraction=0.3,
               drop_fraction_schedule="cosine", begin_step=0, end_step=None,
               grow_init="zeros", grad_accumulation_steps=1, seed=0):
    super().__init__(update_freq, drop_fraction, drop_fraction_schedule, begin_step,
                     end_step, grow_init, seed)
    self.grad_accumulation_steps = _check_int("grad_accumulation_steps",
                                              grad_accumulation_steps, 1)
    self.data = _as_dataset(data)
    self._iterator = None

  def on_train_begin(self, logs=None):
    super().on_train_begin(logs)
    # Resume: skip the batches earlier updates consumed, so an interrupted run
    # sees the same gradient batches as an uninterrupted one.
    step = int(self.model.optimizer.iterations.numpy())
    # Updates happened after steps 0 .. step-1; the one due after `step` (if
    # any) is still to come.
    consumed = self._updates_before(step - 1) * self.grad_accumulation_steps
    dataset = self.data.repeat()
    if consumed:
      dataset = dataset.skip(consumed)
    # One batch ready in the background, so an update does not wait for input.
    dataset = dataset.prefetch(1)
    strategy = self.model.distribute_strategy
    self._iterator = iter(strategy.experimental_distribute_dataset(dataset))

  def _updates_before(self, step):
    """How many update steps there are in [0, step]."""
    first, last = self.begin_step, min(step, self._end_step)
    if last < first:
      return 0
    return last // self.update_freq - (first - 1) // self.update_freq

  def _update_argument(self, step):
    return (tf.constant(self.current_drop_fraction(step), tf.float64), self._iterator)

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
        with capture_effective_weights() as records, compressed.capture() as c_records:
          y_pred = model(x, training=True)
        loss = _compute_loss(model, x, y, y_pred, sample_weight)
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
    return [tf.abs(g) for g in totals]


class SETScheduler(_DropGrowScheduler):
  """SET: like RigL, but grows connections at random (Mocanu et al., 2018).

  Random growth comes from a stateless generator keyed by seed, step and layer,
  so every replica and worker grows the same connections. Takes RigLScheduler's
  arguments; `data` and `grad_accumulation_steps` are accepted and unused.

  Example:
  >>> model.fit(train_ds, epochs=5, callbacks=[keras_rigl.SETScheduler(update_freq=100)])
  """

  def __init__(self, data=None, update_freq=100, drop_fraction=0.3,
               drop_fraction_schedule="cosine", begin_step=0, end_step=None,
               grow_init="zeros", grad_accumulation_steps=1, seed=0):
    super().__init__(update_freq, drop_fraction, drop_fraction_schedule, begin_step,
                     end_step, grow_init, seed)
    _check_int("grad_accumulation_steps", grad_accumulation_steps, 1)

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
    initial_sparsity: sparsity at begin_step (usually 0).
    final_sparsity: float, or None for each layer's own target.
    begin_step, end_step: the pruning window; end_step=None is 75% of the run.
    update_freq: steps between pruning steps.
    power: exponent of the schedule (3 in the paper).
    schedule: optional `tfmot.sparsity.keras.PruningSchedule` (tf_keras) or any
      callable ``step -> (should_prune, sparsity)``; overrides the above.

  Example:
  >>> sparse = keras_rigl.sparsify(model, 0.9, "uniform", mask_init="dense")
  >>> pruning = keras_rigl.MagnitudePruningScheduler(0.0, None, 0, 3000, 100)
  """

  def __init__(self, initial_sparsity=0.0, final_sparsity=None, begin_step=0,
               end_step=None, update_freq=100, power=3, schedule=None):
    super().__init__(update_freq, begin_step, end_step, seed=0)
    for name, value in (("initial_sparsity", initial_sparsity),
                        ("final_sparsity", final_sparsity)):
      if value is not None and not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
    if schedule is not None and not callable(schedule):
      raise ValueError(f"schedule must be callable (e.g. a tfmot PruningSchedule), got {schedule!r}.")
    self.initial_sparsity = float(initial_sparsity)
    self.final_sparsity = None if final_sparsity is None else float(final_sparsity)
    self.power = float(power)
    self.schedule = schedule
    self._fraction = 0.0

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

  def _update_argument(self, step):
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


def _as_dataset(data):
  """A tf.data.Dataset of batches from a Dataset or an iterator of batches."""
  if isinstance(data, tf.data.Dataset):
    return data
  if data is None:
    raise ValueError("RigLScheduler needs `data`: a batched tf.data.Dataset (or iterator "
                     "of (x, y) batches) to take dense gradients from, usually the "
                     "training set.")
  if isinstance(data, (tuple, list)) and data and isinstance(data[0], np.ndarray):
    raise ValueError(
        "RigLScheduler got numpy arrays; pass batches instead, e.g. "
        "tf.data.Dataset.from_tensor_slices((x, y)).shuffle(10000).batch(128).")
  try:
    iterator = iter(data)
  except TypeError:
    raise ValueError(f"RigLScheduler data must be a tf.data.Dataset or an iterator of "
                     f"batches, got {type(data).__name__}.") from None
  first = next(iterator)
  signature = tf.nest.map_structure(
      lambda t: tf.TensorSpec.from_tensor(tf.convert_to_tensor(t)), first)

  def generate():
    yield first
    yield from iterator
  return tf.data.Dataset.from_generator(generate, output_signature=signature)
