"""RigL's separate gradient data: turning it into batches and checking it.

`RigLScheduler(data, ...)` takes the dense gradient it grows from on batches of
`data` (the rigl_tf2 behaviour). `as_dataset` accepts a batched
`tf.data.Dataset` or any iterable of batches; `check_data` refuses, before
training, data that cannot give gradients for the model (no labels, string
labels, the wrong inputs or shapes, unbatched, empty, a loss mismatch), with a
ValueError that starts with "RigLScheduler data" and says the fix.
"""

import numbers
import threading

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import backend


def compute_loss(model, x, y, y_pred, sample_weight):
  """The compiled training loss plus regularisation losses (both flavours).

  >>> from keras_rigl._keras import keras
  >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  >>> model.compile("sgd", "mse")
  >>> x, y = tf.ones([2, 3]), tf.zeros([2, 1])
  >>> float(compute_loss(model, x, y, tf.ones([2, 1]), None))
  1.0
  """
  if _keras.IS_KERAS3:
    return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                              training=True)
  return model.compute_loss(x, y, y_pred, sample_weight)


_DATA_HELP = ("a batched tf.data.Dataset of (x, y) batches, e.g. "
              "tf.data.Dataset.from_tensor_slices((x, y)).shuffle(10000).batch(128)")


class _CachedBatches:
  """Reads a Python iterator once and replays its batches on every pass.

  A generator over the iterator itself would yield only what is left of it on
  a second pass (nothing), so `repeat()` would replay the first batch only.
  """

  _END = object()

  def __init__(self, iterable):
    self._source = iter(iterable)
    self._cache = []
    self._exhausted = False
    self._lock = threading.Lock()

  def get(self, index):
    with self._lock:
      while index >= len(self._cache) and not self._exhausted:
        try:
          self._cache.append(next(self._source))
        except StopIteration:
          self._exhausted = True
      return self._cache[index] if index < len(self._cache) else self._END

  def __call__(self):
    index = 0
    while True:
      batch = self.get(index)
      if batch is self._END:
        return
      yield batch
      index += 1


class HostBatches:
  """RigL data on JAX / PyTorch: an iterable of batches, replayed, without tf.data.

  The few `tf.data.Dataset` methods `RigLScheduler` calls (`repeat`, `skip`,
  `prefetch`, iteration), so that the scheduler reads both the same way.
  Batches are used as they come (numpy arrays, or the backend's tensors).
  """

  def __init__(self, batches, repeat=False, skip=0):
    self._batches = batches
    self._repeat = repeat
    self._skip = skip

  def first(self):
    return self._batches.get(0)

  def repeat(self):
    return HostBatches(self._batches, True, self._skip)

  def skip(self, count):
    return HostBatches(self._batches, self._repeat, self._skip + int(count))

  def prefetch(self, _):
    return self

  def __iter__(self):
    skip = self._skip
    while True:
      for batch in self._batches():
        if skip:
          skip -= 1
          continue
        yield batch
      if not self._repeat:
        return


def as_dataset(data):
  """A tf.data.Dataset of batches from a Dataset or an iterable of batches.

  A Python iterable is read once, kept in memory and replayed on each pass.

  >>> batches = [(np.ones((2, 3), "float32"), np.zeros((2,), "int32"))] * 2
  >>> [tuple(x.shape) for x, _ in as_dataset(iter(batches))]
  [(2, 3), (2, 3)]
  """
  if isinstance(data, backend.tf_types("data.Dataset")):
    return data
  if data is None:
    raise ValueError("RigLScheduler data is missing: pass " + _DATA_HELP +
                     " to take dense gradients from, usually the training set.")
  if isinstance(data, np.ndarray) or (
      isinstance(data, (tuple, list)) and data and isinstance(data[0], np.ndarray)):
    raise ValueError("RigLScheduler data got numpy arrays; pass batches instead: " +
                     _DATA_HELP + ".")
  if isinstance(data, (str, bytes, dict, numbers.Number, np.generic)):
    raise ValueError(f"RigLScheduler data must be {_DATA_HELP} or an iterable of "
                     f"batches, got {type(data).__name__}.")
  try:
    iter(data)
  except TypeError:
    raise ValueError(f"RigLScheduler data must be {_DATA_HELP} or an iterable of "
                     f"batches, got {type(data).__name__}.") from None
  batches = _CachedBatches(data)
  first = batches.get(0)
  if first is _CachedBatches._END:
    raise ValueError("RigLScheduler data is empty: the iterator yielded no batches. "
                     "Pass " + _DATA_HELP + ".")
  if not backend.IS_TENSORFLOW:  # JAX / PyTorch: no tf.data (nor TensorFlow) needed.
    return HostBatches(batches)
  first = tf.nest.map_structure(tf.convert_to_tensor, first)
  # Any batch size (the last batch may be smaller).
  signature = tf.nest.map_structure(
      lambda t: tf.TensorSpec([None] + t.shape[1:].as_list() if t.shape.rank else [],
                              t.dtype), first)
  return tf.data.Dataset.from_generator(batches, output_signature=signature)


def check_data(dataset, model):
  """Clear errors for RigL data that cannot give gradients for `model`.

  >>> from keras_rigl._keras import keras
  >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  >>> model.compile("sgd", "mse")
  >>> check_data(tf.data.Dataset.from_tensor_slices(tf.ones([4, 3])).batch(2), model)
  Traceback (most recent call last):
  ...
  ValueError: RigLScheduler data must yield (x, y) or (x, y, sample_weight) batches, but it yields TensorSpec: RigL needs labels to compute the loss's gradient. Pass the labelled training set, e.g. tf.data.Dataset.from_tensor_slices((x, y)).batch(128).

  Looks at the element structure against the model's inputs, then reads one
  batch (an empty dataset must fail here, not end training at an update) and
  runs it through the model and the compiled loss in inference mode.
  """
  if isinstance(dataset, HostBatches):
    _check_host_data(dataset, model)
    return
  spec = dataset.element_spec
  if not isinstance(spec, tuple) or len(spec) not in (2, 3):
    kind = (f"a tuple of {len(spec)}" if isinstance(spec, tuple)
            else type(spec).__name__)
    raise ValueError(
        f"RigLScheduler data must yield (x, y) or (x, y, sample_weight) batches, but it "
        f"yields {kind}: RigL needs labels to compute the loss's gradient. Pass the "
        "labelled training set, e.g. tf.data.Dataset.from_tensor_slices((x, y)).batch(128).")
  x_spec, y_spec = spec[0], spec[1]
  for y_leaf in tf.nest.flatten(y_spec):
    if getattr(y_leaf, "dtype", None) == tf.string:
      raise ValueError(
          "RigLScheduler data has string labels; map them to integer class ids (or "
          "one-hot floats) as for fit, e.g. with tf.keras.layers.StringLookup.")
  _check_inputs(x_spec, model)
  cardinality = int(dataset.cardinality())
  if cardinality == 0:
    raise ValueError("RigLScheduler data is empty (0 batches); pass the training set, "
                     "batched, e.g. dataset.batch(128) on a non-empty dataset.")
  batch = None
  for batch in dataset.take(1):
    break
  if batch is None:
    raise ValueError("RigLScheduler data is empty (it yielded no batch); pass the "
                     "training set, batched, e.g. dataset.batch(128).")
  strategy = backend.distribute_strategy(model)
  if strategy is None:  # JAX / PyTorch: numpy batches through the model.
    x, y, sample_weight = _keras.unpack_batch(
        tf.nest.map_structure(lambda t: t.numpy(), batch))
    try:
      compute_loss(model, x, y, model(x, training=False), sample_weight)
    except (ValueError, TypeError) as error:
      raise ValueError(DATA_MISMATCH.format(error=error)) from error
    return
  if not (isinstance(strategy, tf.distribute.OneDeviceStrategy) or
          type(strategy).__name__ == "_DefaultDistributionStrategy"):
    # Distributed variables (metrics) cannot be updated eagerly in
    # cross-replica context: the model and the bare compiled loss function
    # (no metrics) check the values here, the traced update the rest.
    _check_with_loss_function(model, batch, strategy)
    return
  # One batch through the model and the compiled loss (inference mode: no
  # state changes) catches what only shows with values (e.g. one-hot labels
  # for a sparse loss under tf_keras).
  x, y, sample_weight = _keras.unpack_batch(batch)
  try:
    with strategy.scope():
      y_pred = model(x, training=False)
      compute_loss(model, x, y, y_pred, sample_weight)
  except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
    raise ValueError(DATA_MISMATCH.format(error=error)) from error


def _check_host_data(batches, model):
  """`check_data` for `HostBatches` (JAX / PyTorch): the same checks on the first batch."""
  keras = _keras.keras
  batch = batches.first()
  if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
    kind = (f"a tuple of {len(batch)}" if isinstance(batch, (tuple, list))
            else type(batch).__name__)
    raise ValueError(
        f"RigLScheduler data must yield (x, y) or (x, y, sample_weight) batches, but it "
        f"yields {kind}: RigL needs labels to compute the loss's gradient. Pass the "
        "labelled training set, e.g. a list of numpy (x, y) batches.")
  batch = keras.tree.map_structure(lambda t: np.asarray(backend.to_numpy(t)), tuple(batch))
  for y_leaf in keras.tree.flatten(batch[1]):
    if y_leaf.dtype.kind in "USO":
      raise ValueError(
          "RigLScheduler data has string labels; map them to integer class ids (or "
          "one-hot floats) as for fit.")
  _check_inputs(batch[0], model)
  x, y, sample_weight = _keras.unpack_batch(batch)
  try:
    compute_loss(model, x, y, model(x, training=False), sample_weight)
  except (ValueError, TypeError) as error:
    raise ValueError(DATA_MISMATCH.format(error=error)) from error


def _check_with_loss_function(model, batch, strategy):
  """One batch through the model and the compiled loss function, metrics untouched."""
  loss = getattr(model, "loss", None)
  if isinstance(loss, str):
    try:
      loss = _keras.keras.losses.get(loss)
    except ValueError:
      return
  if not callable(loss):
    return  # Several outputs / losses: left to the traced update.
  # The unreduced loss (Loss.call): a reduced one refuses to run under a
  # strategy outside fit (tf_keras), and sample weights do not change formats.
  per_example = getattr(loss, "call", loss)
  x, y, _ = _keras.unpack_batch(batch)
  try:
    with strategy.scope():
      per_example(y, model(x, training=False))
  except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
    raise ValueError(DATA_MISMATCH.format(error=error)) from error


DATA_MISMATCH = (
    "RigLScheduler data does not fit the model or its compiled loss: {error}\nFix: "
    "give RigLScheduler batches like the ones fit trains on (same features and "
    "label format, e.g. integer labels for a sparse loss).")


def _input_names(model):
  names = getattr(model, "input_names", None)
  if names:
    return list(names)
  return [getattr(t, "name", "").split(":")[0] for t in model.inputs]


def _check_inputs(x_spec, model):
  inputs = getattr(model, "inputs", None)
  try:
    inputs = list(inputs) if inputs else None
  except TypeError:
    inputs = None
  if not inputs:
    return  # Subclassed model: the traced forward pass checks the data.
  names = _input_names(model)
  if isinstance(x_spec, dict):
    if set(x_spec) != set(names):
      raise ValueError(
          f"RigLScheduler data yields x as a dict with keys {sorted(x_spec)}, but the "
          f"model's inputs are named {names}; key the features by the input names.")
    specs = [x_spec[name] for name in names]
  else:
    specs = (tf.nest.flatten(x_spec) if backend.IS_TENSORFLOW
             else _keras.keras.tree.flatten(x_spec))
    if len(specs) != len(inputs):
      raise ValueError(
          f"RigLScheduler data yields {len(specs)} input tensor(s) per batch, but the "
          f"model takes {len(inputs)} ({names}); yield x with one tensor per model input.")
  for name, spec, tensor in zip(names, specs, inputs):
    expected = tuple(tensor.shape)
    got = spec.shape  # A tf.TensorSpec's TensorShape, or a numpy array's tuple.
    if getattr(got, "rank", len(got)) is None:
      continue
    got = tuple(got)
    if len(got) == len(expected) - 1:
      raise ValueError(
          f"RigLScheduler data is not batched: input {name!r} has shape {tuple(got)} "
          f"where the model expects batches of shape {expected}. Call .batch(...) on "
          "the dataset, e.g. dataset.batch(128).")
    if len(got) != len(expected) or any(
        e is not None and g is not None and e != g
        for e, g in zip(expected[1:], got[1:])):
      raise ValueError(
          f"RigLScheduler data has the wrong feature shape for input {name!r}: "
          f"batches of shape {tuple(got)}, the model expects {expected}. Pass the "
          "same features fit trains on.")
