"""XLA for the train step under a mirrored strategy: one compiled step per replica.

`model.compile(jit_compile=True)` does not run under MirroredStrategy on
several logical CPUs (or, in Keras 3, on several GPUs either): Keras 3
compiles the whole cross-replica step (`strategy.run` included) as one XLA
cluster, which no single device can run, and tf_keras compiles the replica
step but the compiled call of replica 1 is launched on device 0 and fails
with "Trying to access resource .../replica_1 located in device CPU:1 from
device CPU:0". Both come from where the compiled call is placed, not from the
model.

`jit_compile_per_replica(model)` fixes that at the root: the model keeps
`jit_compile=False` in Keras' sense, and its `train_step` becomes an XLA
function called on each replica's own device (`tf.device` of the replica), so
every replica runs one compiled program on its own variables, as TPUStrategy
does per core. Cross-replica gradient sums stay where the strategy puts them.

Example:
>>> import numpy as np
>>> from keras_rigl._keras import keras
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
>>> model.compile("sgd", "mse")
>>> jit_compile_per_replica(model)
>>> history = model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
>>> len(history.history["loss"])
1
"""

from keras_rigl.backend import tf


def _replica_device():
  """The device of the current replica ('' outside a distribution)."""
  context = tf.distribute.get_replica_context()
  if context is None or not tf.distribute.has_strategy():
    return ""
  replica = tf.get_static_value(context.replica_id_in_sync_group)
  devices = context.strategy.extended.worker_devices
  if replica is None or len(devices) <= 1:
    return ""
  return devices[int(replica)]


def needs_per_replica_jit(strategy):
  """True where `compile(jit_compile=True)` cannot run the replicas (see above).

  Mirrored strategies with more than one replica; not TPUStrategy (which
  compiles per core itself) nor a single device.

  Example:
  >>> needs_per_replica_jit(tf.distribute.get_strategy())
  False
  """
  return (isinstance(strategy, (tf.distribute.MirroredStrategy,
                                tf.distribute.MultiWorkerMirroredStrategy))
          and strategy.num_replicas_in_sync > 1)


def jit_compile_per_replica(model):
  """Compiles `model`'s forward pass (and so its gradient) with XLA per replica.

  The model's `call` becomes an XLA function called on the replica's own
  device; its gradient function is compiled with it. What a mirrored
  strategy must synchronise (the gradient all-reduce, a `merge_call`, which
  TensorFlow cannot run inside XLA on CPUs) stays outside the compiled
  program, in the replica function Keras runs. Call after `model.compile`
  without jit_compile. Example in the module docstring.
  """
  if getattr(model, "_keras_rigl_jit_per_replica", False):
    return
  call = model.call
  compiled = tf.function(call, jit_compile=True, reduce_retracing=True)

  def placed_call(*args, **kwargs):
    with tf.device(_replica_device()):
      return compiled(*args, **kwargs)

  model.call = placed_call
  model._keras_rigl_jit_per_replica = True  # pylint: disable=protected-access
