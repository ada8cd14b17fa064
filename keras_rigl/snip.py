"""SNIP (Lee et al., 2019): one-shot pruning at initialisation by connection sensitivity.

Each connection's score is ``|dL/dW * W|`` at initialisation, with the gradient
summed over a few batches; the connections with the largest scores are kept,
and training is then static sparse training (no scheduler). The RigL paper
lists SNIP among its baselines.
"""

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import backend
from keras_rigl._keras import keras
from keras_rigl.distributions import DISTRIBUTIONS, check_sparsity, num_zeros
from keras_rigl.surgery import sparsify, walk_layers
from keras_rigl.wrapper import (SparseWrapper, capture_effective_weights,
                                substitute_effective_weights)

SNIP_DISTRIBUTIONS = ("global",) + DISTRIBUTIONS


def _check_batches(batches):
  if isinstance(batches, bool) or not isinstance(batches, (int, np.integer)) or batches < 1:
    raise ValueError(f"batches must be an integer >= 1 (how many batches of `data` the "
                     f"sensitivity is summed over), got {batches!r}.")
  return int(batches)


def _batches_of(data, count):
  """The first `count` batches of `data` (a batched Dataset or an iterable of batches)."""
  if isinstance(data, (np.ndarray, tuple, dict)) or data is None:
    raise ValueError("snip data must be a batched tf.data.Dataset or an iterable of (x, y) "
                     "batches, e.g. tf.data.Dataset.from_tensor_slices((x, y)).batch(128); "
                     f"got {type(data).__name__}.")
  try:
    iterator = iter(data)
  except TypeError:
    raise ValueError("snip data must be a batched tf.data.Dataset or an iterable of "
                     f"(x, y) batches, got {type(data).__name__}.") from None
  taken = []
  for batch in iterator:
    taken.append(batch)
    if len(taken) == count:
      break
  if not taken:
    raise ValueError("snip data is empty: it must yield at least one (x, y) batch.")
  return taken


def _loss_function(model, loss):
  if loss is None:
    loss = getattr(model, "loss", None)
  if loss is None:
    raise ValueError("snip needs a loss to take gradients of: pass loss=... (e.g. "
                     "keras.losses.SparseCategoricalCrossentropy(from_logits=True)) or give "
                     "a compiled model.")
  if isinstance(loss, str):
    try:
      return keras.losses.get(loss)
    except ValueError:
      raise ValueError(f"snip loss {loss!r} is not a Keras loss name; pass a loss object "
                       "or a name such as 'sparse_categorical_crossentropy'.") from None
  if not callable(loss):
    raise TypeError(f"snip loss must be a Keras loss (object, function or name), got "
                    f"{loss!r}; e.g. loss=keras.losses.SparseCategoricalCrossentropy("
                    "from_logits=True).")
  return loss


def _sensitivities(model, loss_fn, batches):
  """{(wrapper, index): |sum of dL/dW * W|} over the batches, in numpy."""
  if not backend.IS_TENSORFLOW:
    return _portable_sensitivities(model, loss_fn, batches)
  totals = {}
  for batch in batches:
    x, y, sample_weight = _keras.unpack_batch(batch)
    if y is None:
      raise ValueError("snip data must yield (x, y) batches: labels are needed for the loss.")
    try:
      with tf.GradientTape() as tape:
        with capture_effective_weights() as records:
          y_pred = model(x, training=True)
        loss = loss_fn(y, y_pred, sample_weight=sample_weight) if sample_weight is not None \
            else loss_fn(y, y_pred)
        loss = tf.reduce_mean(loss)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
      raise ValueError(
          f"snip data does not fit the model or the loss: {error}\nFix: pass batches "
          "like the ones fit trains on (same features, labels in the loss's format, "
          "e.g. integer labels for a sparse loss).") from error
    grads = tape.gradient(loss, [tensor for _, _, tensor in records])
    for (wrapper, index, _), grad in zip(records, grads):
      if grad is None:
        continue
      key = (id(wrapper), index)
      totals[key] = totals.get(key, 0.0) + np.asarray(tf.convert_to_tensor(grad), np.float64)
  return totals


def _portable_sensitivities(model, loss_fn, batches):
  """`_sensitivities` on JAX / PyTorch, through the backend seam."""
  keys = [(layer, index) for layer in walk_layers(model) if isinstance(layer, SparseWrapper)
          for index in range(len(layer.masked_weights))]
  totals = {}
  for batch in batches:
    x, y, sample_weight = _keras.unpack_batch(batch)
    if y is None:
      raise ValueError("snip data must yield (x, y) batches: labels are needed for the loss.")
    y = keras.ops.convert_to_tensor(np.asarray(y))
    if sample_weight is not None:
      sample_weight = keras.ops.convert_to_tensor(np.asarray(sample_weight))

    def loss_of(y_pred, y=y, sample_weight=sample_weight):
      loss = loss_fn(y, y_pred, sample_weight=sample_weight) if sample_weight is not None \
          else loss_fn(y, y_pred)
      return keras.ops.mean(loss)

    try:
      grads = backend.loss_gradients(model, x, loss_of, keys, substitute_effective_weights)
    except (ValueError, TypeError) as error:
      raise ValueError(
          f"snip data does not fit the model or the loss: {error}\nFix: pass batches "
          "like the ones fit trains on (same features, labels in the loss's format, "
          "e.g. integer labels for a sparse loss).") from error
    for (wrapper, index), grad in zip(keys, grads):
      key = (id(wrapper), index)
      totals[key] = totals.get(key, 0.0) + np.asarray(grad, np.float64)
  return totals


def snip(model, data, sparsity, distribution="global", batches=1, loss=None,
         erk_power_scale=1.0, custom_sparsity=None, exclude=None, seed=0):
  """A sparse copy of `model` whose masks keep the connections SNIP finds most sensitive.

  The copy comes from `sparsify` (same layers wrapped, same arguments) with
  all-ones masks; the score of each connection is ``|g * w|``, where ``g`` is
  the gradient of the loss w.r.t. the weight summed over the first `batches`
  batches of `data`. Then:

  * ``distribution="global"``: one ranking over every sparse weight of the
    model keeps the ``N - floor(sparsity * N)`` best (the paper's SNIP);
    layers in `custom_sparsity` keep their own count and rank within the layer.
  * ``"uniform"``, ``"er"``, ``"erk"``: each layer keeps as many connections
    as `sparsify` gives it, its best ones.

  Train the result with no scheduler (static sparse training). Scores that
  are not finite (NaN/Inf gradients) raise an error naming the layer. The
  scoring pass runs in training mode; BatchNormalization moving statistics
  and other non-trainable state are restored afterwards, so the model
  returned holds `model`'s weights and statistics, with SNIP's masks.

  Args:
    model: a built, dense Sequential or Functional model (compiled or not).
    data: a batched `tf.data.Dataset` or an iterable of ``(x, y)`` batches.
    sparsity: overall sparsity in [0, 1).
    distribution: "global", "uniform", "er" or "erk".
    batches: how many batches the gradient is summed over.
    loss: a Keras loss (object, function or name); default: the model's
      compiled loss.
    erk_power_scale, custom_sparsity, exclude, seed: as for `sparsify`.

  Returns:
    A new model with SparseWrapper layers whose masks hold the SNIP choice.

  Example:
  >>> import numpy as np
  >>> import tensorflow as tf
  >>> import keras_rigl as kr
  >>> keras = kr.keras
  >>> model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, name="fc1"),
  ...                           keras.layers.Dense(3, name="fc2")])
  >>> x = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
  >>> data = tf.data.Dataset.from_tensor_slices((x, x[:, :3].argmax(1))).batch(32)
  >>> sparse = kr.snip(model, data, 0.8, batches=2,
  ...                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  >>> round(kr.sparsity_report(sparse).sparsity, 2)
  0.8
  """
  sparsity = check_sparsity(sparsity)
  if distribution not in SNIP_DISTRIBUTIONS:
    raise ValueError(f"Unknown distribution {distribution!r} for snip; use one of "
                     f"{SNIP_DISTRIBUTIONS} ('global' ranks all layers together, as SNIP).")
  batches = _check_batches(batches)
  loss_fn = _loss_function(model, loss)
  taken = _batches_of(data, batches)
  # "global" wraps every layer (uniform plan) and re-divides the count below.
  plan = "uniform" if distribution == "global" else distribution
  sparse = sparsify(model, sparsity, plan, erk_power_scale, custom_sparsity, exclude,
                    seed=seed, mask_init="dense")
  targets = [(layer, index, weight, mask)
             for layer in walk_layers(sparse) if isinstance(layer, SparseWrapper)
             for index, (weight, mask) in enumerate(layer.masked_weights)]
  if not targets:
    return sparse
  # The scoring pass runs in training mode (Dropout, batch statistics, as
  # training will); what it moves (BatchNormalization moving statistics, RNG
  # states) is put back so that the model returned is the one sparsify made.
  state = [(v, np.array(v.numpy())) for v in sparse.non_trainable_variables]
  try:
    grads = _sensitivities(sparse, loss_fn, taken)
  finally:
    for variable, value in state:
      variable.assign(value)
  scores = []
  for layer, index, weight, _ in targets:
    grad = grads.get((id(layer), index))
    if grad is None:
      grad = np.zeros(weight.shape)
    score = np.abs(grad * np.asarray(weight, np.float64)).ravel()
    if not np.all(np.isfinite(score)):
      raise ValueError(f"snip: the gradient of layer {layer.layer.name!r} is not finite "
                       "(NaN/Inf) on the given batches; check the data and the loss.")
    scores.append(score)

  custom = set((custom_sparsity or {}).keys())
  keep = [None] * len(targets)
  pooled = []
  for i, (layer, index, weight, _) in enumerate(targets):
    size = int(np.prod(weight.shape))
    key = layer.weight_keys[index]
    layer_sparsity = layer.target_sparsity
    if isinstance(layer_sparsity, dict):
      layer_sparsity = layer_sparsity[key]
    named = layer.layer.name in custom or f"{layer.layer.name}/{key}" in custom
    if distribution == "global" and not named:
      pooled.append(i)
    else:
      keep[i] = size - num_zeros(size, layer_sparsity)
  for i in range(len(targets)):
    if keep[i] is not None:
      _set_mask(targets[i], _best(scores[i], keep[i]))
  if pooled:
    sizes = [scores[i].size for i in pooled]
    total = sum(sizes)
    all_scores = np.concatenate([scores[i] for i in pooled])
    chosen = _best(all_scores, total - num_zeros(total, sparsity))
    for i, part in zip(pooled, np.split(chosen, np.cumsum(sizes)[:-1])):
      _set_mask(targets[i], part)
  return sparse


def _best(scores, count):
  """Boolean mask of the `count` largest scores (ties to the lower index)."""
  chosen = np.zeros(scores.size, bool)
  if count > 0:
    # A stable sort on the negated scores keeps equal scores in index order.
    chosen[np.argsort(-scores, kind="stable")[:count]] = True
  return chosen


def _set_mask(target, chosen):
  layer, _, _, mask = target
  if not backend.IS_TENSORFLOW:
    mask.assign(chosen.reshape(tuple(mask.shape)).astype(
        keras.backend.standardize_dtype(mask.dtype)))
    layer.apply_masks()
    return
  mask.assign(tf.cast(chosen.reshape(tuple(mask.shape)), mask.dtype))
  layer.apply_masks()
