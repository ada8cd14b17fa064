"""RigL's update inside the JAX train step (grow scores from the step's own gradient).

The JAX counterpart of `keras_rigl.methods.in_step` (TensorFlow). Keras's JAX
trainer runs ``model.train_step(state, data)`` as one jitted, stateless
function; the masks are non-trainable variables, so they travel in ``state``
and only a value the step returns persists. `attach` replaces the model's
train step by one that

1. traces Keras's own train step with the wrappers in
   `keras_rigl.wrapper.dense_weight_gradients` mode, so that the gradient
   Keras computes for each masked weight ``W`` is the dense ``dL/d(W * M)``
   (the forward values are unchanged);
2. wraps ``optimizer.stateless_apply`` for that trace: when an update is due
   (``keras.ops.cond`` on the optimizer's step counter, the drop fraction from
   a table of the host's values) it runs the drop/grow rule of
   `keras_rigl.portable_masks` with ``|dL/d(W * M)|`` as grow scores, zeroes
   grown weights and the optimizer slots of every changed entry, and skips a
   weight whose values or scores are not finite; then it masks every masked
   weight's gradient by its (new) mask, so inactive weights stay exactly zero,
   and lets the optimizer apply it;
3. returns the new masks in the state's non-trainable variables.

That step runs only where the host counts an update due; every other step is
Keras's own (static sparsity), so steps between updates cost what static
sparse training costs (see `JaxInStepUpdate._make_steps`).

The host learns of each update through ``jax.debug.callback`` (counters,
history, skipped layers, warnings). Differences from TensorFlow's in-step
update, documented in docs/backends.md: grow_init must be "zeros" (random
initial values come from TensorFlow's generator on the host); the gradient of
a weight regulariser is part of the grow score; a step that the loss scale
skips does not stop a second update at the same step counter. Later `fit`
calls of the same model, optimizer and end step reuse the compiled steps.
"""

import warnings

import numpy as np

from keras_rigl import _keras
from keras_rigl import portable_masks
from keras_rigl._keras import keras
from keras_rigl.backend.host_in_step import HostInStepUpdate
from keras_rigl.methods import timing
from keras_rigl.walk import walk_layers
from keras_rigl.wrapper import SparseWrapper, dense_weight_gradients


def _index(variables, variable, what):
  for i, v in enumerate(variables):
    if v is variable:
      return i
  raise ValueError(f"in-step update: {what} {variable.name!r} is not among the "
                   "model's variables (is the layer part of this model?).")


def _drop_fraction_table(scheduler, end_step):
  """(first update step, float32 fractions of every update step) from the host."""
  table = timing.drop_fraction_table(scheduler, end_step)
  if table is None:
    raise ValueError(
        f"{type(scheduler).__name__}: more update steps than the in-step update on "
        f"JAX tabulates ({timing.MAX_TABLE}); use a larger update_freq or pass "
        "data=... (the host-scheduled update).")
  # float64 on the host, then float32 once: as the TensorFlow update rounds it.
  first, values = table
  return first, values.astype(np.float32)


class JaxInStepUpdate(HostInStepUpdate):
  """The installed train step of one scheduler, model and optimizer."""

  def __init__(self, scheduler, model, end_step):
    super().__init__(scheduler, model, end_step)
    targets = scheduler._targets  # pylint: disable=protected-access
    self.weights = [_index(model.trainable_variables, t.weight, "weight") for t in targets]
    self.masks = [_index(model.non_trainable_variables, t.mask, "mask") for t in targets]
    optimizer_variables = list(self.optimizer.variables)
    self.slots = [[_index(optimizer_variables, s, "optimizer slot") for s in t.slots]
                  for t in targets]
    self.iterations = _index(optimizer_variables, self.optimizer.iterations,
                             "optimizer step counter")
    self.first, self.table = _drop_fraction_table(scheduler, self.end_step)
    self.jit_compile = bool(model.jit_compile and not model.run_eagerly)
    self._steps = None  # (plain, update, train_step), made at the first install.

  # --- host side ---------------------------------------------------------------

  def _record(self, step, changed, finite):
    scheduler = self.scheduler
    step = int(step)
    change = float(np.asarray(changed).sum()) / max(
        sum(t.size for t in scheduler._targets), 1)  # pylint: disable=protected-access
    scheduler.updates += 1
    scheduler.last_update_step = step
    scheduler.last_mask_change = change
    scheduler.update_history.append((step, change))
    finite = np.asarray(finite)
    if not finite.all():
      names = [t.name for t, ok in zip(scheduler._targets, finite) if not ok]  # pylint: disable=protected-access
      scheduler.skipped_layers.extend((step, name) for name in names)
      warnings.warn(
          f"{type(scheduler).__name__}: skipped the mask update of {', '.join(names)} "
          f"at step {step}: {scheduler._non_finite_source()} hold NaN or Inf. Those "  # pylint: disable=protected-access
          "masks, weights and optimizer slots are unchanged; check the learning rate, "
          "the loss and the data.", RuntimeWarning, stacklevel=2)

  # --- traced side ---------------------------------------------------------------

  def _update(self, step, fraction, grads, trainable, optimizer_variables, masks):
    """The drop/grow update on value lists; returns new (trainable, optimizer, masks)."""
    import jax  # pylint: disable=g-import-not-at-top
    ops = keras.ops
    trainable, optimizer_variables, masks = (list(trainable), list(optimizer_variables),
                                             list(masks))
    changed_counts, finite_flags = [], []
    for i, (w_index, slots) in enumerate(zip(self.weights, self.slots)):
      weight, mask, grad = trainable[w_index], masks[i], grads[w_index]
      scores = ops.abs(ops.cast(grad, "float32"))
      new_mask, grown = portable_masks.min_fan_in_update(
          mask, weight, scores, fraction, getattr(self.scheduler, "min_fan_in", 0))
      finite = ops.logical_and(ops.all(ops.isfinite(weight)), ops.all(ops.isfinite(scores)))
      new_mask = ops.where(finite, new_mask, mask)
      grown = ops.logical_and(grown, finite)
      changed = ops.not_equal(new_mask, mask)
      trainable[w_index] = ops.multiply(
          ops.where(grown, ops.zeros_like(weight), weight), ops.cast(new_mask, weight.dtype))
      for s in slots:
        value = optimizer_variables[s]
        optimizer_variables[s] = ops.where(changed, ops.zeros_like(value), value)
      masks[i] = new_mask
      changed_counts.append(ops.sum(ops.cast(changed, "int32")))
      finite_flags.append(finite)
    jax.debug.callback(self._record, step, ops.stack(changed_counts),
                       ops.stack(finite_flags))
    return trainable, optimizer_variables, masks

  def _apply(self, original_apply, masks_in, cell):
    """An ``optimizer.stateless_apply`` that runs the update first when it is due."""
    ops = keras.ops
    s = self.scheduler
    table = ops.convert_to_tensor(self.table, "float32")

    def stateless_apply(optimizer_variables, grads, trainable_variables):
      step = ops.cast(optimizer_variables[self.iterations], "int32")
      due = ops.logical_and(
          ops.logical_and(ops.greater_equal(step, s.begin_step),
                          ops.less_equal(step, self.end_step)),
          ops.equal(ops.mod(step, s.update_freq), 0))
      index = ops.clip((step - self.first) // s.update_freq, 0, len(self.table) - 1)
      fraction = ops.take(table, index)
      grads = list(grads)

      def update():
        return self._update(step, fraction, grads, trainable_variables,
                            optimizer_variables, masks_in)

      def keep():
        return list(trainable_variables), list(optimizer_variables), list(masks_in)

      trainable, optimizer_variables, masks = ops.cond(due, update, keep)
      for w_index, mask in zip(self.weights, masks):
        if grads[w_index] is not None:
          grads[w_index] = ops.multiply(grads[w_index],
                                        ops.cast(mask, grads[w_index].dtype))
      cell["masks"] = masks
      return original_apply(optimizer_variables, grads, trainable)

    return stateless_apply

  def _make_steps(self):
    """(plain step, update step, train_step): made, and jitted, once per update."""
    model, optimizer = self.model, self.optimizer
    original_step = model.train_step
    original_apply = optimizer.stateless_apply
    update = self

    def train_step(state, data):
      trainable, non_trainable, optimizer_variables, metrics = state
      masks_in = [non_trainable[i] for i in update.masks]
      cell = {}
      object.__setattr__(optimizer, "stateless_apply",
                         update._apply(original_apply, masks_in, cell))
      try:
        with dense_weight_gradients():
          logs, state = original_step(
              (trainable, non_trainable, optimizer_variables, metrics), data)
      finally:
        object.__delattr__(optimizer, "stateless_apply")
      trainable, non_trainable, optimizer_variables, metrics = state
      non_trainable = list(non_trainable)
      for i, mask in zip(update.masks, cell["masks"]):
        non_trainable[i] = mask
      return logs, (trainable, non_trainable, optimizer_variables, metrics)

    # Two compiled steps, chosen on the host: Keras's own (static sparsity:
    # W * M forward, masked gradients) and the one above, for the steps where
    # an update is due. A keras.ops.cond in every step made each step pass
    # every weight, slot and mask through the condition (a copy per step:
    # +30% epoch time on LeNet-300-100). Keras's JAX trainer calls the jitted
    # step once per step, also under steps_per_execution, so the host knows
    # the step: the counter is read once per fit (`next_step`) and counted.
    # The condition stays inside the update step, so a wrong host count (a
    # step the loss scale skipped) can delay an update, never misplace one.
    plain_step, update_step = original_step, train_step
    if model.jit_compile and not model.run_eagerly:
      import jax  # pylint: disable=g-import-not-at-top
      plain_step = jax.jit(original_step, donate_argnums=0)
      update_step = jax.jit(train_step, donate_argnums=0)
    return plain_step, update_step, train_step

  def install(self):
    """Makes `model.fit` run the chosen steps (again, at each fit: no new trace)."""
    model, optimizer = self.model, self.optimizer
    if self._steps is None:
      self._steps = self._make_steps()
    plain_step, update_step, train_step = self._steps
    update = self

    def chosen_step(state, data):
      step = update.next_step
      update.next_step += 1
      if update.due_on_host(step):
        return update_step(state, data)
      return plain_step(state, data)

    self._claim_optimizer()
    object.__setattr__(model, "train_step", train_step)
    model.train_function = model._make_function(chosen_step)  # pylint: disable=protected-access
    self.next_step = int(np.asarray(keras.ops.convert_to_numpy(optimizer.iterations)))
    self._installed = True

  def reusable_for(self, model, end_step):
    """True if the next fit can run this update's compiled steps as they are."""
    return (not self._installed and self.model is model and
            self.optimizer is model.optimizer and self.end_step == int(end_step) and
            self.jit_compile == (model.jit_compile and not model.run_eagerly))

  def due_on_host(self, step):
    """True if an update is due at optimizer step `step` (the host's count)."""
    s = self.scheduler
    return (s.begin_step <= step <= self.end_step and step % s.update_freq == 0) or \
        self.scaled_loss

  @property
  def scaled_loss(self):
    """A LossScaleOptimizer may skip steps: then every step checks in the graph."""
    return len(_keras.unwrap_optimizer(self.optimizer)) > 1



def attach(scheduler):
  """Puts `scheduler`'s update into its model's JAX train step (on_train_begin)."""
  model = scheduler.model
  current = scheduler._in_step  # pylint: disable=protected-access
  if current is not None:
    current.uninstall()
    scheduler._in_step = None  # pylint: disable=protected-access
  if scheduler.end_step is None and current is not None and current.model is model:
    end_step = current.end_step
  else:
    end_step = scheduler._resolve_end_step()  # pylint: disable=protected-access
  scheduler._end_step = end_step  # pylint: disable=protected-access
  scheduler._check_schedule()  # pylint: disable=protected-access
  if getattr(scheduler, "grow_init", "zeros") != "zeros":
    raise ValueError(
        f"{type(scheduler).__name__}(grow_init={scheduler.grow_init!r}): the update "
        "inside the JAX train step starts grown weights at zero only. Use "
        "grow_init='zeros', or pass data=... (the host-scheduled update, which "
        "supports every grow_init).")
  for layer in walk_layers(model):
    if isinstance(layer, SparseWrapper):
      layer.apply_masks()
  scheduler._targets = scheduler._find_targets()  # pylint: disable=protected-access
  scheduler._prepare_targets()  # pylint: disable=protected-access
  _keras.build_optimizer(model.optimizer, model.trainable_variables)
  scheduler._build_update()  # pylint: disable=protected-access
  scheduler._built_for = (model, model.optimizer)  # pylint: disable=protected-access
  if current is not None and current.reusable_for(model, end_step):
    update = current  # Later fits: the steps compiled at the first one.
  else:
    update = JaxInStepUpdate(scheduler, model, end_step)
  update.install()
  scheduler._in_step = update  # pylint: disable=protected-access
  return update
