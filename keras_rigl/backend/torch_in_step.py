"""RigL's update inside the PyTorch train step (grow scores from the step's own gradient).

The PyTorch counterpart of `keras_rigl.methods.in_step` (TensorFlow) and
`keras_rigl.backend.jax_in_step`. Keras's PyTorch trainer runs
``model.train_step(data)`` eagerly: forward pass, ``loss.backward()``, then
``optimizer.apply(gradients, trainable_weights)``. `attach` replaces the
model's train step by one that

1. runs Keras's own train step with the wrappers in
   `keras_rigl.wrapper.dense_weight_gradients` mode, so that the gradient
   ``loss.backward()`` leaves on each masked weight ``W`` is the dense
   ``dL/d(W * M)`` (the forward values are unchanged);
2. wraps ``optimizer.apply`` for that step: when an update is due (the
   optimizer's step counter, read on the host) it runs the scheduler's own
   host update (`MaskScheduler._run_update`, the `keras.ops` drop/grow rule of
   `keras_rigl.portable_masks`) with ``|dL/d(W * M)|`` as grow scores: new
   masks, grown weights at `grow_init`, optimizer slots of changed entries
   zeroed, a layer with non-finite weights or scores skipped, counters and
   history updated at once; then it multiplies every masked weight's gradient
   by its (new) mask, so that inactive weights and their slots stay exactly
   zero, and lets the optimizer apply it.

Same timing as on TensorFlow: the update due at step ``t`` (``t`` optimizer
steps done) runs inside step ``t + 1``, on that step's batch, before that
step's gradient is applied. The train step must run eagerly (Keras's default
on PyTorch; ``jit_compile=True`` is refused).
"""

from keras_rigl import _keras
from keras_rigl._keras import keras
from keras_rigl.backend.host_in_step import HostInStepUpdate
from keras_rigl.walk import walk_layers
from keras_rigl.wrapper import SparseWrapper, dense_weight_gradients


class TorchInStepUpdate(HostInStepUpdate):
  """The installed train step of one scheduler, model and optimizer."""

  def _apply(self, original_apply):
    """An ``optimizer.apply`` that runs the update first when it is due."""
    scheduler = self.scheduler
    ops = keras.ops

    def apply(grads, trainable_variables=None):
      if trainable_variables is None:  # apply(grads_and_vars) form.
        return original_apply(grads, trainable_variables)
      grads = list(grads)
      position = {id(v): i for i, v in enumerate(trainable_variables)}
      indices = [position.get(id(t.weight)) for t in scheduler._targets]  # pylint: disable=protected-access
      step = int(self.optimizer.iterations.numpy())
      if step != scheduler._done_step and scheduler._should_update(step):  # pylint: disable=protected-access
        gradients = [ops.zeros(t.weight.shape, "float32") if i is None or grads[i] is None
                     else grads[i] for t, i in zip(scheduler._targets, indices)]  # pylint: disable=protected-access
        fraction = scheduler._scalar(scheduler.current_drop_fraction(step))  # pylint: disable=protected-access
        scheduler._run_update(step, (fraction, gradients))  # pylint: disable=protected-access
      for target, i in zip(scheduler._targets, indices):  # pylint: disable=protected-access
        if i is not None and grads[i] is not None:
          mask = _keras.variable_tensor(target.mask)
          grads[i] = ops.multiply(grads[i], ops.cast(mask, grads[i].dtype))
      return original_apply(grads, trainable_variables)

    return apply

  def install(self):
    model, optimizer = self.model, self.optimizer
    if _keras.jit_compile(model):
      raise ValueError(
          f"{type(self.scheduler).__name__}'s update inside the PyTorch train step "
          "runs on the host between the backward pass and the optimizer: compile "
          "the model with jit_compile=False, or pass data=... (the host-scheduled "
          "update).")
    original_step = model.train_step
    original_apply = optimizer.apply
    update = self

    def train_step(data):
      object.__setattr__(optimizer, "apply", update._apply(original_apply))
      try:
        with dense_weight_gradients():
          return original_step(data)
      finally:
        object.__delattr__(optimizer, "apply")

    self._claim_optimizer()
    object.__setattr__(model, "train_step", train_step)
    model.make_train_function(force=True)
    self._installed = True



def attach(scheduler):
  """Puts `scheduler`'s update into its model's PyTorch train step (on_train_begin)."""
  model = scheduler.model
  current = scheduler._in_step  # pylint: disable=protected-access
  if current is not None:
    current.uninstall()
    scheduler._in_step = None  # pylint: disable=protected-access
  end_step = scheduler._resolve_end_step()  # pylint: disable=protected-access
  scheduler._end_step = end_step  # pylint: disable=protected-access
  scheduler._steps_per_execution = 1  # pylint: disable=protected-access
  scheduler._check_schedule()  # pylint: disable=protected-access
  scheduler._done_step = None  # pylint: disable=protected-access
  for layer in walk_layers(model):
    if isinstance(layer, SparseWrapper):
      layer.apply_masks()  # Inactive weights exactly zero: the train step reads W.
  scheduler._prepare(int(model.optimizer.iterations.numpy()))  # pylint: disable=protected-access
  update = TorchInStepUpdate(scheduler, model, end_step)
  update.install()
  scheduler._in_step = update  # pylint: disable=protected-access
  return update
