"""What the JAX and PyTorch in-step updates share: installing and putting back.

`keras_rigl.backend.jax_in_step` and `keras_rigl.backend.torch_in_step` each
replace the model's train step; this base holds the rest, which both do the
same way: one in-step scheduler per optimizer, putting Keras's own train step
back, and the interface `MaskScheduler` calls on TensorFlow's
`keras_rigl.methods.in_step.InStepUpdate` (`sync`, `enabled.assign`).
"""


class HostInStepUpdate:
  """Base of the installed train step of one scheduler, model and optimizer."""

  def __init__(self, scheduler, model, end_step):
    self.scheduler = scheduler
    self.model = model
    self.optimizer = model.optimizer
    self.end_step = int(end_step)
    self._installed = False

  def _claim_optimizer(self):
    """Marks the optimizer as ours; an error if another scheduler holds it."""
    if getattr(self.optimizer, "_keras_rigl_in_step", None) is not None:
      raise ValueError(
          "This optimizer already runs the in-step update of another mask scheduler; "
          "use one RigLScheduler/SETScheduler per model (and per optimizer).")
    object.__setattr__(self.optimizer, "_keras_rigl_in_step", self)

  def uninstall(self):
    """Puts Keras's own train step back."""
    if not self._installed:
      return
    for owner, name in ((self.model, "train_step"), (self.optimizer, "_keras_rigl_in_step")):
      try:
        object.__delattr__(owner, name)
      except AttributeError:
        pass
    self.model.make_train_function(force=True)
    self._installed = False

  # The TensorFlow InStepUpdate's interface, as MaskScheduler calls it.
  def sync(self):
    """Counters are recorded on the host as updates happen: nothing to copy."""

  @property
  def enabled(self):
    return self

  def assign(self, value):
    """``enabled.assign(False)`` at on_train_end: the train step is put back."""
    if not value:
      self.uninstall()
