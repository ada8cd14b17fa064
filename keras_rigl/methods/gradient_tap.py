"""GradientTap: a dense-gradient moving average fed by the training pass.

Methods that rank or redistribute by the smoothed dense gradient (SNFS, RigL
with ``redistribution="momentum"``) enable one tap per masked weight through
`SparseWrapper.enable_gradient_taps`; the wrapper then computes ``W * M``
through `GradientTap.product`.
"""

import numpy as np
from keras_rigl.backend import tf

from keras_rigl.custom_gradient import custom_gradient


class GradientTap:
  """Exponential moving average of the dense gradient of one masked weight.

  Sparse momentum (SNFS) grows the connections whose smoothed *dense*
  gradient is largest, but Keras's gradient of ``W`` is ``dL/d(W * M) * M``:
  zero where the mask is. When a scheduler enables a tap on a SparseWrapper,
  the wrapper computes ``W * M`` through a custom gradient whose backward pass
  also updates ``buffer <- momentum * buffer + (1 - momentum) * dL/d(W * M)``
  (dense) and hands Keras the usual masked gradient. The first backward pass
  of a training step decays the buffer; further uses of a shared layer in the
  same step only add to it. Steps with a non-finite gradient (skipped
  mixed-precision steps) leave it unchanged. Under loss scaling the gradient
  is the scaled one: rankings and layer proportions at an update do not
  change, but a change of the loss scale reweights older steps in the EMA.

  `buffer` is a per-replica variable (ON_READ, SUM): each replica adds its own
  gradient, and reading it in cross-replica context gives the sum over
  replicas, the EMA of the summed gradient. It is not a weight of the layer
  (not saved with the model, not trainable); `state` and `restore` carry it
  over to a resumed run (the scheduler's `resume_state`).

  Example:
  >>> w = tf.Variable([[1.0, 2.0]])
  >>> tap = GradientTap((1, 2), momentum=0.5, step=tf.Variable(0, dtype=tf.int64))
  >>> with tf.GradientTape() as g:
  ...   loss = tf.reduce_sum(tap.product(w, tf.constant([[1.0, 0.0]])) * [[3.0, 4.0]])
  >>> g.gradient(loss, w).numpy().tolist(), tap.buffer.numpy().tolist()
  ([[3.0, 0.0]], [[1.5, 2.0]])
  """

  def __init__(self, shape, momentum, step, name="gradient_tap"):
    self.momentum = float(momentum)
    self.step = step
    on_read = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ)
    self.buffer = tf.Variable(tf.zeros(shape, tf.float32), name=f"{name}_momentum",
                              aggregation=tf.VariableAggregation.SUM, **on_read)
    # The step the buffer last took a gradient from: later uses in the same
    # step add without decaying again.
    self.last_step = tf.Variable(tf.constant(-1, tf.int64), name=f"{name}_step",
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                                 **on_read)

  def state(self):
    """(buffer summed over replicas, last step) as numpy values."""
    return (np.asarray(tf.convert_to_tensor(self.buffer)),
            np.asarray(tf.convert_to_tensor(self.last_step)))

  def restore(self, buffer, last_step):
    """Puts back `state()`'s values (in the strategy scope the tap was made in)."""
    strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    share = tf.constant(np.asarray(buffer, np.float32) / replicas)
    step = tf.constant(np.asarray(last_step, np.int64))

    def assign():
      self.buffer.assign(share)
      self.last_step.assign(step)

    if isinstance(self.buffer, tf.distribute.DistributedValues):
      strategy.run(assign)  # Each replica its share of the sum.
    else:
      assign()

  def _record(self, gradient):
    gradient = tf.cast(gradient, tf.float32)
    step = tf.cast(tf.convert_to_tensor(self.step), tf.int64)
    decay = tf.where(tf.equal(step, tf.convert_to_tensor(self.last_step)), 1.0,
                     self.momentum)
    buffer = tf.convert_to_tensor(self.buffer)
    finite = tf.reduce_all(tf.math.is_finite(gradient))
    new = decay * buffer + (1.0 - self.momentum) * gradient
    return [self.buffer.assign(tf.where(finite, new, buffer)),
            self.last_step.assign(tf.where(finite, step, tf.convert_to_tensor(self.last_step)))]

  def product(self, weight, mask):
    """``weight * mask``, whose backward pass also feeds the buffer."""

    @custom_gradient
    def masked(w, m):
      def backward(upstream):
        with tf.control_dependencies(self._record(upstream)):
          return tf.identity(upstream * m), tf.zeros_like(m)
      return w * m, backward

    # Tensors, not variables: the custom gradient must not see variable reads.
    return masked(tf.convert_to_tensor(weight), tf.convert_to_tensor(mask))
