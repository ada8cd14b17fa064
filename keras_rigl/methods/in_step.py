"""The mask update inside the compiled train step, as a TPU runs it.

The authors' TF1 optimizer (``SparseRigLOptimizer``) makes the mask update part
of the training graph: on an update step it takes the grow scores from the
gradient of the loss w.r.t. the masked weights ``W * M`` on that step's own
batch, under a condition on the global step. This module does the same for a
Keras model:

* `StepGradientTap` hands the dense gradient ``dL/d(W * M)`` of the current
  train step to the update. Every backward pass computes it anyway (Keras's
  gradient of ``W`` is that tensor times ``M``); the tap only keeps a handle on
  the symbolic tensor while the train function is traced, so steps without an
  update pay nothing.
* `InStepUpdate` wraps the optimizer's ``apply_gradients``: before the
  optimizer applies a step's gradients it runs, under ``tf.cond`` on
  ``optimizer.iterations``, the scheduler's own drop/grow update (the same
  function the host-scheduled update traces), then masks the step's gradients
  with the new masks. Nothing runs in Python between updates, updates land on
  the exact step they are due inside ``steps_per_execution`` loops, and the
  whole step compiles with ``jit_compile=True`` (static shapes).

Under a `tf.distribute` strategy the update runs where the optimizer's own
update runs: in cross-replica context through ``merge_call`` (MirroredStrategy
on CPUs, the default strategy), where the per-replica gradients are summed
with ``strategy.reduce`` and every copy of a mirrored variable is assigned the
same value; or in replica context (strategies without merge_call: TPUs, GPUs
under XLA), where the gradients are summed with ``all_reduce`` and every
replica computes the same masks from the same inputs, as the optimizer's own
weight update does. Masks are ``ONLY_FIRST_REPLICA`` variables, so even there
the first replica's masks are the ones every replica stores.
"""

import threading
import warnings
import weakref

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl.custom_gradient import custom_gradient
from keras_rigl.methods.timing import drop_fraction_table
from keras_rigl.walk import walk_layers
from keras_rigl.wrapper import SparseWrapper

# Set while the model's train_step is traced (per thread: each replica of a
# MirroredStrategy is traced in its own thread).
_TRAIN_STEP = threading.local()


def in_train_step():
  """True while a train step with the in-step update is being traced."""
  return getattr(_TRAIN_STEP, "active", False)


class StepGradientTap:
  """Records ``dL/d(W * M)`` of the train step being traced, for the update.

  `product` computes ``W * M`` through a custom gradient whose backward pass
  returns Keras's usual masked gradient ``upstream * M`` and keeps the dense
  ``upstream`` (per graph and thread: each replica of a MirroredStrategy is
  traced in its own thread). `take` returns the sum of what the backward
  passes of the current graph recorded (a shared layer adds up its uses).

  Example:
  >>> tap = StepGradientTap()
  >>> w = tf.Variable([[1.0, 2.0]])
  >>> @tf.function
  ... def dense_gradient():
  ...   with tf.GradientTape() as g:
  ...     y = tap.product(w, tf.constant([[1.0, 0.0]]))
  ...     loss = tf.reduce_sum(y * [[3.0, 4.0]])
  ...   masked = g.gradient(loss, w)
  ...   return masked, tap.take((1, 2))
  >>> [t.numpy().tolist() for t in dense_gradient()]
  [[[3.0, 0.0]], [[3.0, 4.0]]]
  """

  momentum = None  # Not an EMA (see keras_rigl's GradientTap).

  def __init__(self):
    self._local = threading.local()
    # Buffer mode (see `use_buffer`): a per-replica variable and a predicate.
    self.buffer = None
    self._due = None

  def use_buffer(self, shape, due):
    """Also adds the dense gradient into a per-replica variable when `due()`.

    For backward passes traced in another function than the one that applies
    the gradients (the forward pass compiled as its own XLA function per
    replica, `keras_rigl.recipes.xla`), where a handle on the tensor cannot
    reach the update. Costs one dense buffer per masked weight; written on
    update steps only. Call in the strategy's scope.
    """
    on_read = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                   aggregation=tf.VariableAggregation.SUM)
    self.buffer = tf.Variable(tf.zeros(shape, tf.float32), name="rigl_step_gradient",
                              **on_read)
    self._due = due

  def _records(self):
    records = getattr(self._local, "records", None)
    if records is None:
      records = self._local.records = weakref.WeakKeyDictionary()
    return records

  def product(self, weight, mask):
    """``weight * mask``, whose backward pass records the dense gradient.

    Inside the train step the forward pass reads ``weight`` as it is: its
    inactive entries are exactly zero there (masks are applied at the start of
    every `fit`, gradients are masked, updates zero what they drop), so the
    product would only copy it. Elsewhere (predict, evaluate, export) it is
    computed, so a dense `set_weights` between fits changes no output.
    """
    identity = in_train_step()

    @custom_gradient
    def masked(w, m):
      def backward(upstream):
        graph = tf.compat.v1.get_default_graph()
        self._records().setdefault(graph, []).append(upstream)
        if self.buffer is None:
          return upstream * m, tf.zeros_like(m)
        written = tf.cond(self._due(), lambda: self._add(upstream),
                          lambda: tf.constant(False))
        with tf.control_dependencies([written]):
          return upstream * m, tf.zeros_like(m)
      return (tf.identity(w) if identity else w * m), backward

    return masked(tf.convert_to_tensor(weight), tf.convert_to_tensor(mask))

  def _add(self, gradient):
    with tf.control_dependencies([self.buffer.assign_add(tf.cast(gradient, tf.float32))]):
      return tf.constant(True)

  def recorded(self):
    """True if the update can get this step's gradient in the current graph."""
    return self.buffer is not None or bool(
        self._records().get(tf.compat.v1.get_default_graph()))

  def take(self, shape, dtype="float32"):
    """Sum of the recorded gradients of the current graph (and forgets them).

    In buffer mode: this replica's buffer, which a later `clear` empties.
    """
    records = self._records().pop(tf.compat.v1.get_default_graph(), [])
    if self.buffer is not None:
      return tf.cast(tf.convert_to_tensor(self.buffer), dtype)
    if not records:
      return tf.zeros(shape, dtype)
    return tf.add_n([tf.cast(r, dtype) for r in records])

  def clear(self):
    """Empties the buffer (buffer mode), after an update has read it."""
    if self.buffer is None:
      return tf.constant(False)
    with tf.control_dependencies([self.buffer.assign(tf.zeros_like(self.buffer))]):
      return tf.constant(True)




def _mask_gradient(gradient, mask):
  mask = tf.cast(mask, gradient.dtype)
  if isinstance(gradient, tf.IndexedSlices):
    return tf.IndexedSlices(gradient.values * tf.gather(mask, gradient.indices),
                            gradient.indices, gradient.dense_shape)
  return gradient * mask


class InStepUpdate:
  """A scheduler's mask update, run by the optimizer inside the train step.

  The scheduler provides:
    * ``_targets`` (each with ``weight``, ``mask``, ``tap``, ``size``),
    * ``_update_step(step, argument)`` -> (changed fraction, finite flags),
      the same traced update as the host-scheduled path,
    * ``in_step_argument(step, gradients)`` -> the update's argument,
    * ``update_freq``, ``begin_step`` and a resolved end step.

  `install` wraps ``model.optimizer.apply_gradients`` and makes the model's
  train function again; `enabled` (a variable) switches the update off outside
  the scheduler's `fit` calls without tracing again.
  """

  def __init__(self, scheduler, model, end_step):
    self.scheduler = scheduler
    self.model = model
    self.optimizer = model.optimizer
    self.end_step = int(end_step)
    targets = scheduler._targets  # pylint: disable=protected-access
    with model.distribute_strategy.scope():
      only_first = tf.VariableAggregation.ONLY_FIRST_REPLICA
      state = dict(trainable=False, aggregation=only_first)
      self.enabled = tf.Variable(False, name="rigl_in_step_enabled", **state)
      self.updates = tf.Variable(tf.constant(0, tf.int64), name="rigl_updates", **state)
      self.last_step = tf.Variable(tf.constant(-1, tf.int64), name="rigl_last_update",
                                   **state)
      self.last_change = tf.Variable(tf.constant(0.0, tf.float64),
                                     name="rigl_last_mask_change", **state)
      # Per target: how many updates it skipped (NaN/Inf), and the last step.
      self.skipped = tf.Variable(tf.zeros([len(targets)], tf.int64),
                                 name="rigl_skipped_updates", **state)
      self.skipped_step = tf.Variable(tf.fill([len(targets)], tf.constant(-1, tf.int64)),
                                      name="rigl_skipped_step", **state)
    self._table = drop_fraction_table(scheduler, self.end_step)
    self._seen_updates, self._seen_skipped = 0, np.zeros(len(targets), np.int64)
    # Per update step of the window: its mask change, once done (history).
    slots = len(self._table[1]) if self._table is not None else 0
    with model.distribute_strategy.scope():
      self.history = tf.Variable(tf.fill([max(slots, 1)], tf.constant(-1.0, tf.float64)),
                                 name="rigl_update_history", **state)
    self._reported = set()
    self._by_variable = {id(t.weight): t for t in targets}
    self._original = None

  def sync(self):
    """Copies the update counters into the scheduler's attributes; warns of skips."""
    scheduler = self.scheduler
    updates = int(self.updates.numpy())
    if updates == self._seen_updates:
      return
    skipped = np.asarray(self.skipped.numpy())
    steps = np.asarray(self.skipped_step.numpy())
    targets = scheduler._targets  # pylint: disable=protected-access
    scheduler.updates += updates - self._seen_updates
    scheduler.last_update_step = int(self.last_step.numpy())
    scheduler.last_mask_change = float(self.last_change.numpy())
    if self._table is not None:
      first, freq = self._table[0], scheduler.update_freq
      history = np.asarray(self.history.numpy())
      done = [i for i in np.flatnonzero(history >= 0) if i not in self._reported]
      self._reported.update(done)
      scheduler.update_history.extend((first + int(i) * freq, float(history[i]))
                                      for i in sorted(done))
    else:
      scheduler.update_history.append((scheduler.last_update_step,
                                       scheduler.last_mask_change))
    new = [(int(step), t.name) for t, now, before, step in
           zip(targets, skipped, self._seen_skipped, steps) if now > before]
    self._seen_updates, self._seen_skipped = updates, skipped
    if new:
      scheduler.skipped_layers.extend(new)
      warnings.warn(
          f"{type(scheduler).__name__}: skipped mask updates of "
          f"{', '.join(name for _, name in new)} (last at step "
          f"{max(step for step, _ in new)}): "
          f"{scheduler._non_finite_source()} held NaN or Inf. Those masks, weights "  # pylint: disable=protected-access
          "and optimizer slots were left unchanged; check the learning rate, the "
          "loss and the data.", RuntimeWarning, stacklevel=3)

  # --- schedule in the graph ---------------------------------------------------

  def due(self, step):
    """Scalar bool: an update is due at optimizer step `step` (int64)."""
    s = self.scheduler
    return tf.logical_and(
        tf.logical_and(tf.logical_and(self.enabled, step >= s.begin_step),
                       tf.logical_and(step <= self.end_step,
                                      tf.equal(step % s.update_freq, 0))),
        tf.not_equal(step, self.last_step))

  def drop_fraction(self, step):
    """float64 drop fraction at update step `step`, as the host computes it."""
    if self._table is not None:
      first, values = self._table
      index = tf.clip_by_value((step - first) // self.scheduler.update_freq, 0,
                               len(values) - 1)
      return tf.gather(tf.constant(values, tf.float64), index)
    return self.scheduler.drop_fraction_tensor(step, self.end_step)

  # --- installation ------------------------------------------------------------

  def install(self):
    """Wraps the optimizer's apply_gradients and re-makes the train function."""
    optimizer = self.optimizer
    if getattr(optimizer, "_keras_rigl_in_step", None) is not None:
      raise ValueError(
          "This optimizer already runs the in-step update of another mask scheduler; "
          "use one RigLScheduler/SETScheduler per model (and per optimizer).")
    original = optimizer.apply_gradients
    update = self

    def apply_gradients(grads_and_vars, *args, **kwargs):
      return original(update.run(list(grads_and_vars)), *args, **kwargs)

    original_step = self.model.train_step

    def train_step(*args, **kwargs):
      _TRAIN_STEP.active = True
      try:
        return original_step(*args, **kwargs)
      finally:
        _TRAIN_STEP.active = False

    object.__setattr__(optimizer, "apply_gradients", apply_gradients)
    object.__setattr__(optimizer, "_keras_rigl_in_step", self)
    object.__setattr__(self.model, "train_step", train_step)
    self._original = original
    _keras.remake_train_function(self.model)

  def uninstall(self):
    """Puts the optimizer's own apply_gradients back (a new trace follows)."""
    if self._original is None:
      return
    for owner, name in ((self.optimizer, "apply_gradients"), (self.model, "train_step")):
      try:
        object.__delattr__(owner, name)
      except AttributeError:
        pass
    object.__delattr__(self.optimizer, "_keras_rigl_in_step")
    self._original = None
    _keras.remake_train_function(self.model)

  # --- the traced part -----------------------------------------------------------

  def run(self, grads_and_vars):
    """Runs (at update steps) the mask update; returns the gradients to apply."""
    targets = self.scheduler._targets  # pylint: disable=protected-access
    missing = [t.name for t in targets if not t.tap.recorded()]
    if missing:
      raise ValueError(
          f"{type(self.scheduler).__name__}: the train step computed no gradient for "
          f"{missing}: those layers do not contribute to the training loss, or the "
          "model's train_step does not differentiate the loss through them. Pass "
          "data=... to the scheduler to take grow scores from a separate pass.")
    gradients = [t.tap.take(t.weight.shape, tf.float32) for t in targets]
    tf.__internal__.distribute.interim.maybe_merge_call(
        self._merged_update, tf.distribute.get_strategy(), gradients)
    # The step's gradients were masked by the masks of the forward pass: mask
    # them by the new ones, so that dropped weights stay exactly zero.
    step = tf.cast(tf.convert_to_tensor(self.optimizer.iterations), tf.int64)
    updated = tf.equal(self.last_step, step)
    if any(t.tap.buffer is not None for t in targets):
      cleared = [tf.cond(updated, t.tap.clear, lambda: tf.constant(False)) for t in targets]
      with tf.control_dependencies(cleared):
        updated = tf.identity(updated)
    result = []
    for gradient, variable in grads_and_vars:
      target = self._by_variable.get(id(variable))
      if target is not None and gradient is not None:
        mask = _keras.variable_tensor(target.mask)
        gradient = tf.cond(updated, lambda g=gradient, m=mask: _mask_gradient(g, m),
                           lambda g=gradient: g)
      result.append((gradient, variable))
    return result

  def _merged_update(self, strategy, gradients):
    step = tf.cast(tf.convert_to_tensor(self.optimizer.iterations), tf.int64)
    cross_replica = tf.distribute.in_cross_replica_context()

    def update():
      if cross_replica:
        summed = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None)
                  for g in gradients]
      else:
        summed = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, list(gradients))
      argument = self.scheduler.in_step_argument(step, self.drop_fraction(step), summed)
      change, finite = self.scheduler._update_step(step, argument)  # pylint: disable=protected-access
      bad = tf.logical_not(finite)
      with tf.control_dependencies([change, finite]):
        ops = [self.updates.assign_add(1), self.last_step.assign(step),
               self._record_history(step, change),
               self.last_change.assign(change),
               self.skipped.assign_add(tf.cast(bad, tf.int64)),
               self.skipped_step.assign(tf.where(bad, step, self.skipped_step))]
      with tf.control_dependencies(ops):
        return tf.constant(True)

    return tf.cond(self.due(step), update, lambda: tf.constant(False))

  def _record_history(self, step, change):
    if self._table is None:
      return tf.no_op()
    first, freq = self._table[0], self.scheduler.update_freq
    index = tf.clip_by_value((step - first) // freq, 0, self.history.shape[0] - 1)
    return self.history.assign(tf.tensor_scatter_nd_update(
        tf.convert_to_tensor(self.history), tf.reshape(index, [1, 1]),
        tf.reshape(change, [1])))


# --- the callback side ---------------------------------------------------------

def _apply_masks(model):
  """Zeroes every SparseWrapper's inactive weights (a dense set_weights...)."""
  with model.distribute_strategy.scope():
    for layer in walk_layers(model):
      if isinstance(layer, SparseWrapper):
        layer.apply_masks()

def attach(scheduler):
  """Puts `scheduler`'s update into its model's train step (at on_train_begin).

  Traces nothing again when the model, optimizer and end step are the ones of
  the last `fit`: the update is only switched back on. `end_step=None` is
  resolved once, at the first `fit` of the model (75% of that fit's steps).
  """
  model = scheduler.model
  current = scheduler._in_step  # pylint: disable=protected-access
  same_model = current is not None and current.model is model
  if scheduler.end_step is None and same_model:
    end_step = current.end_step
  else:
    end_step = scheduler._resolve_end_step()  # pylint: disable=protected-access
  scheduler._end_step = end_step  # pylint: disable=protected-access
  scheduler._check_schedule()  # pylint: disable=protected-access
  _apply_masks(model)  # Inactive weights exactly zero: the train step reads W.
  if same_model and current.optimizer is model.optimizer and current.end_step == end_step:
    current.enabled.assign(True)
    return current
  if current is not None:
    current.uninstall()
    scheduler._in_step = None  # pylint: disable=protected-access
  scheduler._targets = scheduler._find_targets()  # pylint: disable=protected-access
  if scheduler._compressed:  # pylint: disable=protected-access
    raise ValueError(
        f"{type(scheduler).__name__}: the update inside the train step does not support "
        "compressed layers (keras_rigl.layers) yet; pass data=... (a batched "
        "tf.data.Dataset of the training set) to take grow scores from a separate "
        "pass, or sparsify with storage=\"masked\".")
  if _keras.jit_compile(model) or isinstance(model.distribute_strategy,
                                             tf.distribute.TPUStrategy):
    scheduler.static_shapes = True  # XLA: every shape in the update static.
  scheduler._prepare_targets()  # pylint: disable=protected-access
  with model.distribute_strategy.scope():
    if not _keras.build_optimizer(model.optimizer, model.trainable_variables):
      _keras.create_legacy_slots(model.optimizer, model.trainable_variables)
  scheduler._build_update()  # pylint: disable=protected-access
  scheduler._built_for = (model, model.optimizer)  # pylint: disable=protected-access
  scheduler._enable_step_taps()  # pylint: disable=protected-access
  update = InStepUpdate(scheduler, model, end_step)
  if getattr(model, "_keras_rigl_jit_per_replica", False):
    # The backward pass is traced inside the per-replica XLA function.
    step = lambda: tf.cast(tf.convert_to_tensor(model.optimizer.iterations), tf.int64)
    with model.distribute_strategy.scope():
      for t in scheduler._targets:  # pylint: disable=protected-access
        if getattr(t, "tap", None) is not None and t.tap.buffer is None and \
            hasattr(t.tap, "use_buffer"):
          t.tap.use_buffer(t.weight.shape, lambda: update.due(step()))
  update.install()
  update.enabled.assign(True)
  scheduler._in_step = update  # pylint: disable=protected-access
  return update
