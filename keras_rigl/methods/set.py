"""SET (Mocanu et al., 2018): RigL's drop, random growth."""

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import backend

from keras_rigl.methods.drop_grow import DropGrowScheduler
from keras_rigl.methods.validation import check_data_not_a_number, check_int


class SETScheduler(DropGrowScheduler):
  """SET: like RigL, but grows connections at random (Mocanu et al., 2018).

  Random growth comes from a stateless generator keyed by seed, step and layer,
  so every replica and worker grows the same connections. Takes RigLScheduler's
  arguments (`min_fan_in` included); `data` and `grad_accumulation_steps` are
  accepted and unused, so pass the others by keyword:
  ``SETScheduler(update_freq=100)``.

  Example:
  >>> import numpy as np, tensorflow as tf, keras_rigl as kr
  >>> from keras_rigl._keras import keras
  >>> hidden, out = keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)
  >>> model = kr.sparsify(keras.Sequential([keras.Input((12,)), hidden, out]), 0.8)
  >>> model.compile("sgd", "mse")
  >>> x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
  >>> train = tf.data.Dataset.from_tensor_slices((x, x[:, :2])).batch(16)
  >>> set_ = kr.SETScheduler(update_freq=4, end_step=4)
  >>> history = model.fit(train, epochs=2, callbacks=[set_], verbose=0)
  >>> set_.updates
  2
  """

  def __init__(self, data=None, update_freq=100, drop_fraction=0.3,
               drop_fraction_schedule="cosine", begin_step=0, end_step=None,
               grow_init="zeros", grad_accumulation_steps=1, seed=0, min_fan_in=0):
    check_data_not_a_number(data, "SETScheduler", "unused by SET")
    super().__init__(update_freq, drop_fraction, drop_fraction_schedule, begin_step,
                     end_step, grow_init, seed, min_fan_in=min_fan_in)
    check_int("grad_accumulation_steps", grad_accumulation_steps, 1, "SETScheduler: ")

  def _grow_scores(self, step, source):
    if not backend.IS_TENSORFLOW:  # The same numbers, made on the host.
      return [backend.host_random_uniform(t.weight.shape, (t.key, int(step) + (1 << 40)))
              for t in self._targets]
    return [tf.random.stateless_uniform(
        t.weight.shape, seed=tf.stack([tf.constant(t.key, tf.int64), step + (1 << 40)]))
            for t in self._targets]

