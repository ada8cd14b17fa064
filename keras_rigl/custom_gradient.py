"""``tf.custom_gradient`` whose traced graphs can be freed.

In a graph (every ``tf.function`` trace) ``tf.custom_gradient`` registers the
call's gradient function in TensorFlow's global gradient registry under a new
name, and never removes it. That function's closure holds tensors of the
graph being traced, so every traced graph that calls it (a model's whole
train function) stays alive until the process ends. A process that traces
many functions grows without bound: a notebook that builds model after
model, or this project's test suite, where each traced compressed model kept
about 20 000 Python objects alive and late tests ran 10x slower than alone.

`custom_gradient` calls ``tf.custom_gradient`` unchanged, then leaves in the
registry only a small forwarder that holds a weak reference; the gradient
function itself is kept by the graph it was traced in and is freed with it.
Everything that looks the gradient up while that graph exists (tapes,
``tf.gradients``, loops' and functions' backward passes, SavedModel export)
finds it as before. The registry is a private part of TensorFlow: where it is
not as expected, nothing is changed (the graphs then stay alive, as with
``tf.custom_gradient``).
"""

import functools
import weakref

from keras_rigl.backend import tf

# The graph collection that keeps each call's gradient function alive (a
# FuncGraph takes no new attributes; its collections live and die with it).
_KEPT = "_keras_rigl_custom_gradients"


def custom_gradient(f):
  """``tf.custom_gradient(f)``, minus the registry entry that outlives the graph.

  Use it exactly as ``tf.custom_gradient``: ``f`` takes tensors and returns
  ``(outputs, grad_fn)``.

  Example:
  >>> import tensorflow as tf
  >>> from keras_rigl.custom_gradient import custom_gradient
  >>> @custom_gradient
  ... def clipped(x):
  ...   return tf.identity(x), lambda dy: tf.clip_by_value(dy, -1.0, 1.0)
  >>> @tf.function
  ... def grad(x):
  ...   with tf.GradientTape() as tape:
  ...     tape.watch(x)
  ...     y = 5.0 * clipped(x)
  ...   return tape.gradient(y, x)
  >>> float(grad(tf.constant(2.0)))
  1.0
  """
  decorated = tf.custom_gradient(f)

  @functools.wraps(f)
  def call(*args):
    result = decorated(*args)
    if not tf.executing_eagerly():
      _keep_with_graph(tf.nest.flatten(result)[0])
    return result

  return call


def gradient_registry():
  """TensorFlow's gradient registry, ``{name: {"type": function, ...}}``, or None.

  A private part of TensorFlow (None where it is not found); the one place
  keras_rigl (and its test set-up, which drops TensorFlow's own registrations
  with each module's models) reaches it.

  Example:
  >>> from keras_rigl.custom_gradient import gradient_registry
  >>> "MatMul" in gradient_registry()
  True
  """
  try:
    from tensorflow.python.framework import ops  # pylint: disable=g-import-not-at-top
    return ops._gradient_registry._registry  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return None


def _keep_with_graph(output):
  """Moves the registry's hold on `output`'s gradient function to `output.graph`."""
  registry = gradient_registry()
  try:
    name = output.op.get_attr("_gradient_op_type").decode()
    entry = registry[name]
    function = entry["type"]
  except (AttributeError, ValueError, KeyError, TypeError):
    return  # Not the registry this was written for: leave it as it is.
  output.graph.add_to_collection(_KEPT, function)
  entry["type"] = _forwarder(weakref.ref(function), name)


def _forwarder(ref, name):
  def forward(op, *grads):
    function = ref()
    if function is None:
      raise LookupError(f"The graph that traced custom gradient {name!r} no longer exists; "
                        "trace the function again to differentiate it.")
    return function(op, *grads)

  return forward
