"""The base of every mask scheduler: finding targets, timing, the update.

`MaskScheduler` is a Keras callback that finds the sparse weights of a model
(SparseWrapper masks and compressed `keras_rigl.layers`), decides from
``optimizer.iterations`` when an update is due, and runs one compiled
`tf.function` that turns the method's new masks into assignments: masks,
weights (grown ones at their initial value, dropped ones at zero) and
optimizer slots (reset where the mask changed), in cross-replica context so
every replica and worker ends with the same state. A method only says what
the new masks are: `_new_masks(step, argument)` over `self._targets` (and,
when it needs one, what `_update_argument(step)` hands it).

All state lives in variables that Keras already saves: the masks (in the
wrappers) and the step (``optimizer.iterations``). Between updates the
callback reads the step counter only on the batches where an update could be
due.
"""

import math
import warnings

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import backend
from keras_rigl._keras import keras
from keras_rigl.layers.scheduling import CompressedUpdater
from keras_rigl.methods import in_step as _in_step
from keras_rigl.methods.validation import check_int, check_seed
from keras_rigl.methods.timing import is_update_step
from keras_rigl.targets import Target
from keras_rigl.walk import walk_layers
from keras_rigl.wrapper import SparseWrapper

# Fraction of a run's steps after which RigL stops updating masks (the paper).
DEFAULT_END_FRACTION = 0.75


class _UpdateTiming:
  """When an update is due: the window, the step counter, skipped batches.

  Part of `MaskScheduler` (kept apart to keep each class one concern). It
  reads ``self.update_freq``, ``self.begin_step``, ``self._end_step`` and
  ``self._steps_per_execution``, and calls ``self._run_update(step)``.
  """

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
    if getattr(self, "in_step", False):
      return  # The train step itself updates the masks.
    # The step counter, not a batch counter, decides (batches drift from it:
    # skipped mixed-precision steps, restores). It grows by at most
    # steps_per_execution per batch, so it is read only when an update could
    # be due: no device read on most batches.
    if self._quiet_batches > 0:
      self._quiet_batches -= 1
      return
    backend.sync_state(self.model)  # JAX: variables hold the state again.
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


class MaskScheduler(_UpdateTiming, keras.callbacks.Callback):
  """Shared machinery: finding layers, timing updates, slot resets, logs.

  Timing: an update is due when ``optimizer.iterations`` (the number of
  optimizer steps taken) is an update step of the schedule. The callback
  reads that counter before every batch, so batches that did not advance it
  (skipped mixed-precision steps), restored checkpoints and several `fit`
  calls never shift, skip or repeat an update.

  Compiled once: the update is traced once per (model, optimizer), at the first
  `on_train_begin` (the optimizer's slots are created first if the optimizer
  is not built yet), and reused by later `fit` calls.

  A method subclasses it and defines `_new_masks(step, argument)`: one
  ``(new_mask, grown)`` pair per target of ``self._targets``.

  Example (a method that keeps every mask as it is):
  >>> import numpy as np, tensorflow as tf, keras_rigl as kr
  >>> from keras_rigl._keras import keras
  >>> class Keep(MaskScheduler):
  ...   def _new_masks(self, step, argument):
  ...     return [(tf.convert_to_tensor(t.mask), tf.zeros(t.mask.shape, tf.bool))
  ...             for t in self._targets]
  >>> x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
  >>> model = kr.sparsify(keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)]), 0.5)
  >>> model.compile("sgd", "mse")
  >>> keep = Keep(update_freq=2, begin_step=0, end_step=4, seed=0)
  >>> history = model.fit(x, x[:, :4], batch_size=8, epochs=2, callbacks=[keep], verbose=0)
  >>> keep.updates, keep.last_mask_change
  (3, 0.0)
  """

  # False for a method that changes the number of ones (pruning): compressed
  # layers, whose number of stored entries is fixed, refuse it.
  _fixed_count = True

  def __init__(self, update_freq, begin_step, end_step, seed):
    super().__init__()
    owner = f"{type(self).__name__}: "
    self.update_freq = check_int("update_freq", update_freq, 1, owner)
    self.begin_step = check_int("begin_step", begin_step, 0, owner)
    self.end_step = None if end_step is None else check_int("end_step", end_step, 0, owner)
    if self.end_step is not None and self.end_step < self.begin_step:
      raise ValueError(f"{owner}end_step ({end_step}) must be >= begin_step ({begin_step}); "
                       "swap them or raise end_step.")
    self.seed = check_seed(seed, owner)
    self._targets = None
    self._update_fn = None
    self._built_for = None      # (model, optimizer) the update was built for.
    self._slots_pending = False  # Slots appear only with the first step.
    self._trace_count = 0       # Python-side traces of the update (tests).
    self._end_step = self.end_step
    # end_step=None: 75% of the first fit's steps, kept for the whole training
    # run (later fits, a resumed run: see resume_state).
    self._resolved_end_step = None
    self._done_step = None
    self._quiet_batches = 0
    self._steps_per_execution = 1
    self.last_mask_change = 0.0
    self.last_update_step = None
    self.updates = 0
    # [(step, weight name)] of layer updates skipped for non-finite values.
    self.skipped_layers = []
    # [(step, fraction of mask entries changed)] of every update, in order.
    self.update_history = []
    self._supports_tf_logs = True  # tf_keras: no per-batch numpy conversion.
    # Static shapes in the update (automatic under TPUStrategy); same result.
    self.static_shapes = False
    self._in_step = None  # InStepUpdate while the update runs in the train step.

  # Whether the update runs inside the compiled train step (subclasses decide;
  # otherwise this callback runs it on the host between steps).
  in_step = False

  # --- set-up -------------------------------------------------------------

  def _find_targets(self):
    wrappers = [l for l in walk_layers(self.model) if isinstance(l, SparseWrapper)]
    # Compressed storage hook: keras_rigl.layers (SparseDense...) targets.
    self._compressed = CompressedUpdater(self.model, self.seed, type(self).__name__,
                                         fixed_count=self._fixed_count)
    if not wrappers and not self._compressed:
      raise ValueError(
          f"{type(self).__name__}: the model has no SparseWrapper layers (nor "
          "compressed keras_rigl.layers). Wrap layers with keras_rigl.SparseWrapper or "
          "call keras_rigl.sparsify(model, ...) before fit.")
    targets = []
    for wrapper in wrappers:
      for index in range(len(wrapper.masked_weights)):
        targets.append(Target.of_wrapper(wrapper, index, self.seed))
    return targets

  def _resolve_end_step(self):
    if self.end_step is not None:
      return self.end_step
    if self._resolved_end_step is not None:
      return self._resolved_end_step
    steps, epochs = self.params.get("steps"), self.params.get("epochs")
    if not steps or not epochs:
      raise ValueError(
          f"{type(self).__name__}(end_step=None) takes 75% of the run's steps, but "
          "Keras does not know how many steps this fit runs (no steps_per_epoch "
          "and a dataset of unknown length). Pass end_step=... explicitly.")
    self._resolved_end_step = int(DEFAULT_END_FRACTION * steps * epochs)
    return self._resolved_end_step

  def on_train_begin(self, logs=None):
    if self.in_step:
      if backend.NAME == "jax":
        from keras_rigl.backend import jax_in_step  # pylint: disable=g-import-not-at-top
        jax_in_step.attach(self)
        return
      if backend.NAME == "torch":
        from keras_rigl.backend import torch_in_step  # pylint: disable=g-import-not-at-top
        torch_in_step.attach(self)
        return
      backend.require_tensorflow(
          f"{type(self).__name__}'s update inside the train step (grow scores from "
          "the training step's own gradient; TensorFlow, JAX and PyTorch)",
          f"Pass data=... to {type(self).__name__} (batches of the training set, "
          "e.g. a list of numpy (x, y) batches): its grow scores then come from a "
          "separate pass, which runs on every backend.")
      _in_step.attach(self)
      return
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

  # --- resume ---------------------------------------------------------------

  def resume_state(self):
    """What this callback holds beyond the model's variables: ``(meta, arrays)``.

    `meta` is JSON-friendly (the end step resolved at the first fit, update
    counters, histories), `arrays` maps names to numpy arrays (e.g. SNFS's
    momentum buffers). Saved next to a backup at an epoch end and given back
    to `restore_resume_state` when the run resumes from that backup, it makes
    the resumed run continue exactly as the uninterrupted one
    (`keras_rigl.recipes` does this for examples/train.py).
    """
    meta = {"resolved_end_step": self._resolved_end_step, "updates": self.updates,
            "last_update_step": self.last_update_step,
            "last_mask_change": float(self.last_mask_change),
            "skipped_layers": [list(entry) for entry in self.skipped_layers]}
    return meta, {}

  def restore_resume_state(self, meta, arrays):  # pylint: disable=unused-argument
    """Puts back what `resume_state` returned (call after on_train_begin)."""
    if self.end_step is None and meta.get("resolved_end_step") is not None:
      self._resolved_end_step = int(meta["resolved_end_step"])
      self._end_step = self._resolved_end_step
    self.updates = int(meta.get("updates", self.updates))
    self.last_update_step = meta.get("last_update_step")
    self.last_mask_change = float(meta.get("last_mask_change", 0.0))
    self.skipped_layers = [tuple(entry) for entry in meta.get("skipped_layers", [])]

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
    with backend.strategy_scope(model):
      slots_ready = _keras.build_optimizer(optimizer, model.trainable_variables)
    self._build_update()
    self._built_for = (model, optimizer)
    self._slots_pending = not slots_ready
    if slots_ready and backend.IS_TENSORFLOW:
      self._trace(step)

  def _prepare_targets(self):
    """Per-model set-up once the targets are known (hook)."""

  def _trace(self, step):
    with self.model.distribute_strategy.scope():
      self._update_fn.get_concrete_function(
          tf.TensorSpec([], tf.int64), self._update_argument(step, check=False))

  def _build_update(self):
    optimizer = self.model.optimizer
    if not backend.IS_TENSORFLOW:
      self._build_portable_update()
      return
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
    self._compressed.static_shapes = static
    self._compressed.max_fraction = self._max_fraction()  # The same bound as max_update.
    self._compressed.check()
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

  def _build_portable_update(self):
    """JAX / PyTorch: the update runs eagerly in keras.ops from the callback."""
    if self.static_shapes:
      backend.require_tensorflow(
          f"{type(self).__name__}(static_shapes=True) (the TPU update)",
          "Leave static_shapes False: the keras.ops update has static shapes already.")
    for target in self._targets:
      target.slots = _keras.optimizer_slots(self.model.optimizer, target.weight)
    self._compressed.build(self.model.optimizer)  # Compressed storage hook.
    self._metric_variables = list(self.model.metrics_variables)
    self._state_variables = []  # The separate pass there changes no state.
    self._update_fn = self._portable_update_step

  def _portable_update_step(self, step, argument):
    """`_update_step` in keras.ops, run eagerly (JAX and PyTorch backends)."""
    ops = keras.ops
    self._trace_count += 1
    results = self._new_masks(step, argument)
    changed_total = 0.0
    size_total = 0
    finite_flags = []
    for target, result in zip(self._targets, results):
      new_mask, grown = result[0], result[1]
      old_mask = _keras.variable_tensor(target.mask)
      weight = _keras.variable_tensor(target.weight)
      # Non-finite weights or scores: leave this target exactly as it is.
      finite = bool(ops.all(ops.isfinite(weight)))
      if len(result) > 2:
        finite = finite and bool(result[2])
      finite_flags.append(finite)
      size_total += target.size
      if not finite:
        continue
      changed = ops.not_equal(new_mask, old_mask)
      init = self._grown_values(target, step, new_mask, grown)
      new_weight = ops.multiply(
          ops.where(grown, ops.cast(init, weight.dtype), weight), new_mask)
      target.weight.assign(new_weight)
      target.mask.assign(new_mask)
      for slot in target.slots:
        value = _keras.variable_tensor(slot)
        slot.assign(ops.where(changed, ops.zeros_like(value), value))
      changed_total += int(ops.sum(ops.cast(changed, "int32")))
    return changed_total / max(size_total, 1), np.asarray(finite_flags, bool)

  # --- the update ---------------------------------------------------------

  def _new_masks(self, step, argument):
    """[(new_mask, grown) or (new_mask, grown, finite)] per target.

    `finite` (optional scalar bool) is False when the scores the masks come
    from hold NaN/Inf: that target's update is then skipped.
    """
    raise NotImplementedError

  def _grown_values(self, target, step, new_mask, grown):
    if not backend.IS_TENSORFLOW:
      return keras.ops.zeros_like(_keras.variable_tensor(target.weight))
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
    return self._scalar(0.0)

  @staticmethod
  def _scalar(value):
    """A float64 scalar for the compiled update (TensorFlow), else a float."""
    return tf.constant(value, tf.float64) if backend.IS_TENSORFLOW else float(value)

  def _max_fraction(self):
    """Largest fraction of a layer's ones one update can move."""
    return 1.0

  def _run_update(self, step, argument=None):
    """Runs the update due at `step` (`argument`: `_update_argument`'s, by default)."""
    if self._update_fn is None or (self._slots_pending and step > 0):
      # Optimizer slots may only appear with the first step (tf_keras legacy
      # optimizers create them then): look them up again after step 0.
      self._built_for = None
      self._prepare(step)
      if self._slots_pending and step > 0:
        self._slots_pending = False
    if argument is None:
      argument = self._update_argument(step)
    if backend.IS_TENSORFLOW:
      with self.model.distribute_strategy.scope():
        change, finite = self._update_fn(tf.constant(step, tf.int64), argument)
    else:
      backend.sync_state(self.model)
      change, finite = self._update_fn(step, argument)
      backend.state_changed(self.model)
    self._done_step = step
    self.last_mask_change = float(change)
    self.last_update_step = step
    self.updates += 1
    self.update_history.append((step, self.last_mask_change))
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
    if self._in_step is not None:
      self._in_step.sync()
    self._log(int(self.model.optimizer.iterations.numpy()), logs)

  def sync_updates(self):
    """Brings `updates`, `update_history`... up to date (in-step updates are
    read from their variables at epoch ends; call this to read them now)."""
    if self._in_step is not None:
      self._in_step.sync()

  def on_train_end(self, logs=None):
    if self._in_step is not None:
      self._in_step.sync()
      self._in_step.enabled.assign(False)  # Later fits without this callback.

  # --- the update inside the train step (keras_rigl.methods.in_step) -------

  def _enable_step_taps(self):
    """Hook: gradient taps the in-step update reads (RigL: the step gradient)."""

  def in_step_argument(self, step, drop_fraction, gradients):
    """The update's argument inside the train step (hook)."""
    raise NotImplementedError

