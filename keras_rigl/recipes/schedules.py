"""The authors' learning-rate schedule: linear warm-up, then step decay.

Example:
>>> from keras_rigl.recipes.schedules import WarmupPiecewiseDecay
>>> lr = WarmupPiecewiseDecay(1.6, 10, [30, 70], [0.1, 0.01])
>>> [round(float(lr(s)), 4) for s in (0, 5, 10, 30, 80)]
[0.0, 0.8, 1.6, 0.16, 0.016]
"""

import tensorflow as tf

from keras_rigl._keras import keras


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
    self.peak = float(peak)
    self.warmup_steps = int(warmup_steps)
    self.boundaries = [int(b) for b in boundaries]
    self.multipliers = [float(m) for m in multipliers]

  def __call__(self, step):
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
