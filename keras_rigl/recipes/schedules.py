"""The authors' learning-rate schedules: warm-up then step decay, or cosine decay.

Example:
>>> from keras_rigl.recipes.schedules import WarmupPiecewiseDecay
>>> lr = WarmupPiecewiseDecay(1.6, 10, [30, 70], [0.1, 0.01])
>>> [round(float(lr(s)), 4) for s in (0, 5, 10, 30, 80)]
[0.0, 0.8, 1.6, 0.16, 0.016]
"""

import math
import numbers

from keras_rigl.backend import tf

from keras_rigl import backend
from keras_rigl._keras import keras


def _check_rate(owner, name, value):
  """A finite learning rate > 0, or ValueError naming it."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
      0 < value < math.inf):
    raise ValueError(f"{owner} {name} must be a finite learning rate > 0, got {value!r}; "
                     "e.g. 0.1.")


@keras.utils.register_keras_serializable(package="keras_rigl")
class WarmupPiecewiseDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0, then a constant rate multiplied at boundaries.

  ``lr(step) = peak * step / warmup_steps`` while ``step < warmup_steps``,
  then ``peak * multipliers[i]`` from ``boundaries[i]`` on (``peak`` before
  the first boundary): the authors' ImageNet schedule (``lr_schedule`` in
  imagenet_train_eval.py) and, without warm-up, their CIFAR one.

  Args:
    peak: the learning rate after warm-up.
    warmup_steps: length of the linear warm-up (0: none).
    boundaries: increasing steps at which the rate changes.
    multipliers: the factor of `peak` from each boundary on.

  Example:
  >>> lr = WarmupPiecewiseDecay(1.6, 10, [30, 70], [0.1, 0.01])
  >>> [round(float(lr(s)), 4) for s in (0, 5, 10, 30, 80)]
  [0.0, 0.8, 1.6, 0.16, 0.016]
  """

  def __init__(self, peak, warmup_steps=0, boundaries=(), multipliers=()):
    super().__init__()
    if len(boundaries) != len(multipliers):
      raise ValueError(f"boundaries ({len(boundaries)}) and multipliers "
                       f"({len(multipliers)}) must have the same length.")
    _check_rate("WarmupPiecewiseDecay", "peak", peak)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Integral) or warmup_steps < 0:
      raise ValueError(f"WarmupPiecewiseDecay warmup_steps must be an integer >= 0 (0: no "
                       f"warm-up), got {warmup_steps!r}.")
    if any(b > c for b, c in zip(list(boundaries), list(boundaries)[1:])):
      raise ValueError(f"WarmupPiecewiseDecay boundaries must not decrease, got "
                       f"{list(boundaries)}; e.g. [30000, 60000].")
    self.peak = float(peak)
    self.warmup_steps = int(warmup_steps)
    self.boundaries = [int(b) for b in boundaries]
    self.multipliers = [float(m) for m in multipliers]

  def __call__(self, step):
    if not backend.IS_TENSORFLOW:  # JAX / PyTorch: the same in keras.ops.
      ops = keras.ops
      step = ops.cast(step, "float32")
      rate = ops.full_like(step, self.peak)
      for boundary, multiplier in zip(self.boundaries, self.multipliers):
        rate = ops.where(step >= boundary, self.peak * multiplier, rate)
      if self.warmup_steps > 0:
        rate = ops.where(step < self.warmup_steps, self.peak * step / self.warmup_steps,
                         rate)
      return rate
    step = tf.cast(tf.convert_to_tensor(step), tf.float32)
    rate = tf.constant(self.peak, tf.float32)
    for boundary, multiplier in zip(self.boundaries, self.multipliers):
      rate = tf.where(step >= boundary, self.peak * multiplier, rate)
    if self.warmup_steps > 0:
      rate = tf.where(step < self.warmup_steps,
                      self.peak * step / self.warmup_steps, rate)
    return rate

  def get_config(self):
    return {"peak": self.peak, "warmup_steps": self.warmup_steps,
            "boundaries": list(self.boundaries), "multipliers": list(self.multipliers)}


@keras.utils.register_keras_serializable(package="keras_rigl")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0, then a cosine decay to 0 at `decay_steps`.

  ``lr(step) = peak * step / warmup_steps`` while ``step < warmup_steps``,
  then ``peak * (1 + cos(pi * t / T)) / 2`` with ``t = step - warmup_steps``
  and ``T = decay_steps - warmup_steps`` (0 from `decay_steps` on): the
  schedule of the authors' TF2 trainer (``rigl_tf2``, Keras ``CosineDecay``
  over the whole run), whose MLP recipe is the ``fashion_mnist_mlp_rigl_tf2``
  config.

  Args:
    peak: the learning rate after warm-up.
    decay_steps: the step at which the rate reaches 0 (the run's length).
    warmup_steps: length of the linear warm-up (0: none).

  Example:
  >>> lr = WarmupCosineDecay(0.2, 100)
  >>> [round(float(lr(s)), 4) for s in (0, 50, 100, 200)]
  [0.2, 0.1, 0.0, 0.0]
  """

  def __init__(self, peak, decay_steps, warmup_steps=0):
    super().__init__()
    if int(decay_steps) < 1 or not 0 <= int(warmup_steps) < int(decay_steps):
      raise ValueError(f"decay_steps ({decay_steps}) must be >= 1 and larger than "
                       f"warmup_steps ({warmup_steps}), which must be >= 0.")
    self.peak = float(peak)
    self.decay_steps = int(decay_steps)
    self.warmup_steps = int(warmup_steps)

  def __call__(self, step):
    if not backend.IS_TENSORFLOW:  # JAX / PyTorch: the same in keras.ops.
      ops = keras.ops
      step = ops.cast(step, "float32")
      span = float(self.decay_steps - self.warmup_steps)
      progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
      rate = self.peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
      if self.warmup_steps > 0:
        rate = ops.where(step < self.warmup_steps, self.peak * step / self.warmup_steps,
                         rate)
      return rate
    step = tf.cast(tf.convert_to_tensor(step), tf.float32)
    span = float(self.decay_steps - self.warmup_steps)
    progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
    rate = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
    if self.warmup_steps > 0:
      rate = tf.where(step < self.warmup_steps,
                      self.peak * step / self.warmup_steps, rate)
    return rate

  def get_config(self):
    return {"peak": self.peak, "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps}
