"""keras_rigl.custom_gradient: tf.custom_gradient whose traced graphs are freed."""

import gc
import weakref

import numpy as np
import tensorflow as tf

from keras_rigl.custom_gradient import custom_gradient


@custom_gradient
def _scaled_gradient(x, y):
  """x * y forward; gradients scaled by 10 (so the custom one is visibly used)."""
  return x * y, lambda dz: (10.0 * dz * y, 10.0 * dz * x)


def _traced_gradient():
  @tf.function
  def grad(x, y):
    with tf.GradientTape() as tape:
      tape.watch([x, y])
      z = tf.reduce_sum(_scaled_gradient(x, y))
    return tape.gradient(z, [x, y])

  concrete = grad.get_concrete_function(tf.TensorSpec([3]), tf.TensorSpec([3]))
  return grad, weakref.ref(concrete.graph)


def test_the_custom_gradient_is_used_in_a_traced_function():
  grad, _ = _traced_gradient()
  gx, gy = grad(tf.constant([1.0, 2.0, 3.0]), tf.constant([4.0, 5.0, 6.0]))
  np.testing.assert_allclose(gx, [40.0, 50.0, 60.0])
  np.testing.assert_allclose(gy, [10.0, 20.0, 30.0])


def test_eager_calls_keep_the_custom_gradient():
  x, y = tf.constant([1.0, 2.0]), tf.constant([3.0, 4.0])
  with tf.GradientTape() as tape:
    tape.watch(x)
    z = tf.reduce_sum(_scaled_gradient(x, y))
  np.testing.assert_allclose(tape.gradient(z, x), [30.0, 40.0])


def test_symbolic_gradients_inside_a_while_loop():
  @tf.function
  def grad(x):
    def body(i, acc):
      return i + 1, acc + _scaled_gradient(x, x)
    _, total = tf.while_loop(lambda i, _: i < 3, body, (0, tf.zeros_like(x)))
    return tf.gradients(tf.reduce_sum(total), x)[0]

  # d/dx of 3 * x^2 with the gradient scaled by 10: 3 * 10 * 2x.
  np.testing.assert_allclose(grad(tf.constant([1.0, 2.0])), [60.0, 120.0])


def test_the_traced_graph_is_freed_with_its_function():
  """tf.custom_gradient's registry entry alone kept every such graph alive."""
  grad, graph = _traced_gradient()
  grad(tf.ones([3]), tf.ones([3]))
  assert graph() is not None
  del grad
  gc.collect()
  assert graph() is None


def test_a_saved_model_keeps_the_custom_gradient(tmp_path):
  module = tf.Module()
  module.v = tf.Variable([1.0, 2.0, 3.0])
  module.f = tf.function(lambda x: _scaled_gradient(x, module.v),
                         input_signature=[tf.TensorSpec([3])])
  tf.saved_model.save(module, str(tmp_path))
  loaded = tf.saved_model.load(str(tmp_path))
  x = tf.constant([1.0, 1.0, 1.0])
  with tf.GradientTape() as tape:
    tape.watch(x)
    z = tf.reduce_sum(loaded.f(x))
  np.testing.assert_allclose(tape.gradient(z, x), [10.0, 20.0, 30.0])
