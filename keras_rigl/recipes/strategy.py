"""The `tf.distribute` strategy of a run, by name, and questions about it.

Example:
>>> from keras_rigl.recipes.strategy import make_strategy, is_chief
>>> strategy = make_strategy("one_device")
>>> strategy.num_replicas_in_sync, is_chief(strategy)
(1, True)
"""

from absl import logging
from keras_rigl.backend import tf

from keras_rigl import backend
from keras_rigl._keras import FLAVOUR
from keras_rigl.recipes.errors import SetupError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def make_strategy(name, tpu=None):
  """The tf.distribute strategy called `name` (one of `STRATEGIES`).

  auto: TPU if `tpu` is set, mirrored over several GPUs, else one device.
  mirrored without GPUs uses every logical CPU. multi_worker reads
  TF_CONFIG (tf_keras only for more than one worker). Example in the module
  docstring.
  """
  if not backend.IS_TENSORFLOW:
    if name == "one_device" or (name == "auto" and not tpu):
      # No tf.distribute on JAX / PyTorch: the default (no-op) strategy, whose
      # scope and replica count the recipes read; Keras uses one device.
      return tf.distribute.get_strategy()
    backend.require_tensorflow(
        f"tf.distribute strategies (--strategy={name!r})",
        "Use --strategy=one_device (or auto): keras_rigl has no multi-device "
        "training on this backend yet.")
  if name == "multi_worker":
    # Before anything starts the TF runtime: collectives are configured then.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    workers = sum(len(tasks) for tasks in
                  strategy.cluster_resolver.cluster_spec().as_dict().values())
    if FLAVOUR == "keras3" and workers > 1:
      raise SetupError(
          "Keras 3's model.fit does not run under a multi-worker "
          "MultiWorkerMirroredStrategy (keras-team/keras#20585). Use tf_keras: "
          "TF_USE_LEGACY_KERAS=1 python examples/train.py ...")
    return strategy
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    name = "tpu" if tpu else ("mirrored" if len(gpus) > 1 else "one_device")
  if name == "one_device":
    # TensorFlow's default strategy: one replica on the default device (the
    # first GPU if any). tf_keras' BackupAndRestore rejects OneDeviceStrategy.
    return tf.distribute.get_strategy()
  if name == "mirrored":
    if gpus:
      return tf.distribute.MirroredStrategy([d.name for d in gpus])
    # CPU replicas: plain reductions. CPU collectives key their ops by a
    # counter that restarts with every MirroredStrategy, so a second strategy
    # over the same CPUs in one process would collide with the first.
    return tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")],
        cross_device_ops=tf.distribute.ReductionToOneDevice())
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise SetupError(f"Unknown strategy {name!r}; use one of {STRATEGIES}.")


def split_cpu(count):
  """Splits the first CPU into `count` logical devices (for MirroredStrategy).

  `--strategy=mirrored` on a machine without GPUs mirrors over the logical
  CPUs; this makes `count` of them, so a laptop runs the replica code path a
  TPU or several GPUs would. TensorFlow accepts the split only before it
  starts its devices: later it is accepted only if the CPU already has
  `count` logical devices, else `SetupError`. None does nothing.

  Example:
  >>> split_cpu(None)
  >>> split_cpu(len(tf.config.list_logical_devices("CPU")))  # Already so.
  """
  if count is None:
    return
  count = int(count)
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count)
  except RuntimeError:
    existing = len(tf.config.list_logical_devices("CPU"))
    if existing != count:
      raise SetupError(
          f"--cpu_devices={count}: TensorFlow already started with {existing} logical "
          "CPU device(s) and cannot be split again in this process; pass "
          "--cpu_devices before anything runs TensorFlow (examples/train.py does) "
          f"or use --cpu_devices={existing}.") from None


def is_tpu(strategy):
  """True for TPUStrategy."""
  return isinstance(strategy, (tf.distribute.TPUStrategy,
                               tf.distribute.experimental.TPUStrategy))


def reads_per_worker(strategy):
  """Strategies whose workers should each read their own shard of the data."""
  return is_tpu(strategy) or isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy):
  """False on the non-chief workers of a multi-worker run."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or is_tpu(strategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type in (None, "chief"):
    return True
  has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
  return task_type == "worker" and task_id == 0 and not has_chief


def mixed_precision_policy(strategy):
  """The Keras mixed-precision policy for `strategy`'s devices.

  bfloat16 on TPU and CPU, float16 (with loss scaling) on GPU.

  Example:
  >>> import tensorflow as tf
  >>> mixed_precision_policy(tf.distribute.get_strategy()) in (
  ...     "mixed_bfloat16", "mixed_float16")
  True
  """
  if is_tpu(strategy):
    return "mixed_bfloat16"
  if tf.config.list_logical_devices("GPU"):
    return "mixed_float16"
  logging.warning("--mixed_precision on CPU: computing in bfloat16, which is "
                  "slower than float32 on CPUs without bfloat16 units.")
  return "mixed_bfloat16"
