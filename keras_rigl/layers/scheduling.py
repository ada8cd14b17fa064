"""Glue between the mask schedulers and compressed layers.

`keras_rigl.methods` calls this from a few marked hooks: it finds the
compressed layers of a model, records their inputs / output gradients in
RigL's extra forward pass, gathers them over replicas, and applies the
drop/grow update of `keras_rigl.layers.update` in cross-replica context (so
every replica ends with the same positions, values and optimizer slots).
"""

import math

import tensorflow as tf

from keras_rigl import _keras
from keras_rigl.layers import update as _update
from keras_rigl.layers.base import CompressedLayer, capture_layer_io
from keras_rigl.targets import Target
from keras_rigl.walk import walk_layers


class CompressedUpdater:
  """The compressed layers of one model, as a scheduler sees them.

  Example:
  >>> from keras_rigl._keras import keras
  >>> from keras_rigl.layers import SparseDense
  >>> model = keras.Sequential([keras.Input((4,)), SparseDense(3, 0.5)])
  >>> updater = CompressedUpdater(model, seed=0, scheduler="RigLScheduler")
  >>> len(updater.targets), updater.size
  (1, 12)
  """

  def __init__(self, model, seed, scheduler, fixed_count=True):
    """`scheduler` names the callback in errors; `fixed_count=False` for one
    that changes the number of ones (pruning), which compressed layers refuse."""
    layers = [l for l in walk_layers(model) if isinstance(l, CompressedLayer)]
    if layers and not fixed_count:
      raise ValueError(
          f"{scheduler} cannot prune compressed layers "
          f"({[l.name for l in layers]}): their number of stored entries is fixed. "
          "Use storage='masked' in keras_rigl.sparsify for dense-to-sparse pruning.")
    self.targets = [Target(w, w.name, seed) for l in layers for w in l.compressed_weights]
    self.size = sum(t.weight.size for t in self.targets)
    self.capture = capture_layer_io

  def __bool__(self):
    return bool(self.targets)

  def variables(self):
    """The position variables, which only the update itself may change."""
    return [target.weight.indices for target in self.targets]

  def build(self, optimizer):
    """Looks up the optimizer slots of every values variable."""
    for target in self.targets:
      target.slots = _keras.optimizer_slots(optimizer, target.weight.values)

  # --- RigL: inputs and output gradients of the extra forward pass ----------

  def outputs(self, records):
    """The recorded output tensors to differentiate the loss against."""
    return [outputs for _, _, outputs in records]

  def replica_data(self, records, grads):
    """Per target (inputs, output gradients), calls of a shared layer concatenated."""
    data = []
    for target in self.targets:
      weight = target.weight
      a_parts, d_parts = [], []
      for (layer, inputs, outputs), grad in zip(records, grads):
        if layer is weight.layer:
          a_parts.append(inputs if inputs.dtype.is_integer else tf.cast(inputs, tf.float32))
          d_parts.append(tf.zeros(tf.shape(outputs), tf.float32) if grad is None
                         else tf.cast(tf.convert_to_tensor(grad), tf.float32))
      if not a_parts:
        ids = weight.layer.compressed_kind == "embedding"
        a_parts = [tf.zeros([0], tf.int64) if ids else tf.zeros([0, weight.n_rows])]
        d_parts = [tf.zeros([0, weight.n_cols])]
      data.append((tf.concat(a_parts, 0), tf.concat(d_parts, 0)))
    return data

  def gather(self, strategy, per_replica):
    """Cross-replica (inputs, gradients): every replica's rows, on every replica.

    ``sum_r a_r^T d_r = concat(a)^T concat(d)``, so gathering the rows is the
    all-reduce of the dense gradient, at O(batch) instead of O(N) traffic.
    """
    return [tuple(strategy.gather(t, axis=0) for t in pair) for pair in per_replica]

  # --- the update -----------------------------------------------------------

  def apply(self, step, drop_fraction, data=None, grow_init="zeros"):
    """Drop/grow every compressed weight; returns the changed mask entries (float64).

    Args:
      step: int64 scalar tensor; drop_fraction: scalar.
      data: [(inputs, gradients)] per target, recorded by a pass that takes
        the dense gradient (RigL): growth by gradient. None: random growth.
      grow_init: "zeros", "random_normal" or "random_uniform".
    """
    changed = tf.constant(0.0, tf.float64)
    for i, target in enumerate(self.targets):
      weight = target.weight
      values = weight.current_values()
      indices = weight.positions()
      if data is not None:
        a, d = data[i]
        block = weight.layer.block_size
        grower = lambda kept, k, a=a, d=d, w=weight, block=block: _update.rigl_grow(
            a, d, w.n_rows, w.n_cols, kept, k, block)
      else:
        seed = tf.stack([tf.constant(target.key, tf.int64), step + (1 << 40)])
        grower = lambda kept, k, w=weight, seed=seed: _update.set_grow(
            w.size, kept, k, seed, w.nnz)
      slots, positions = _update.update(values, indices, weight.size, drop_fraction, grower)
      where = slots[:, None]
      init = self._grown_values(target, step, values, slots, grow_init)
      weight.indices.assign(tf.tensor_scatter_nd_update(
          indices, where, tf.cast(positions, indices.dtype)))
      weight.values.assign(tf.tensor_scatter_nd_update(values, where, init))
      for slot in target.slots:
        value = _keras.variable_tensor(slot)
        slot.assign(tf.tensor_scatter_nd_update(
            value, where, tf.zeros(tf.shape(slots), value.dtype)))
      # A moved connection changes two mask entries (one off, one on).
      changed += 2.0 * tf.cast(tf.size(slots), tf.float64)
    return changed

  def _grown_values(self, target, step, values, slots, grow_init):
    count = tf.shape(slots)
    if grow_init == "zeros":
      return tf.zeros(count, values.dtype)
    # Scale new weights like the layer's surviving ones (as SparseWrapper's).
    moved = tf.scatter_nd(slots[:, None], tf.ones_like(slots), tf.shape(values)) > 0
    kept = tf.cast(tf.logical_not(moved), values.dtype)
    std = tf.sqrt(tf.reduce_sum(tf.square(values * kept)) /
                  tf.maximum(tf.reduce_sum(kept), 1.0))
    seed = tf.stack([tf.constant(target.key, tf.int64), step])
    if grow_init == "random_normal":
      noise = tf.random.stateless_normal(count, seed=seed, dtype=values.dtype)
    else:
      noise = tf.random.stateless_uniform(count, seed=seed, minval=-math.sqrt(3),
                                          maxval=math.sqrt(3), dtype=values.dtype)
    return noise * std
