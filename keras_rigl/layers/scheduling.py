"""Glue between the mask schedulers and compressed layers.

`keras_rigl.methods` calls this from a few marked hooks: it finds the
compressed layers of a model, records their inputs / output gradients in
RigL's extra forward pass, gathers them over replicas, and applies the
drop/grow update of `keras_rigl.layers.update` in cross-replica context (so
every replica ends with the same positions, values and optimizer slots).
"""

import math

from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl.layers import capacity as _capacity
from keras_rigl.layers import fan_in as _fan_in
from keras_rigl.layers import kernels
from keras_rigl.layers import static_update as _static
from keras_rigl.layers import statistics as _statistics
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
    # Static shapes (automatic under XLA): moved entries per update are
    # bounded by nnz x max_fraction, the schedule's largest drop fraction.
    self.static_shapes = False
    self.max_fraction = 1.0
    # Fewest inputs every output unit keeps (RigL/SET's min_fan_in; 0: none).
    self.min_fan_in = 0
    self.capture = capture_layer_io

  def __bool__(self):
    return bool(self.targets)

  def variables(self):
    """The position (and live count) variables, which only the update may change."""
    found = [target.weight.indices for target in self.targets]
    found += [target.weight.count_variable for target in self.targets
              if target.weight.has_capacity]
    return found

  def without_capacity(self):
    """Names of the compressed weights whose count cannot move (no capacity)."""
    return [target.name for target in self.targets if not target.weight.has_capacity]

  def live_counts(self):
    """{weight name: live entries} (Python ints, read eagerly)."""
    return {target.name: target.weight.nnz for target in self.targets}

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

  def apply(self, step, drop_fraction, data=None, grow_init="zeros", counts=None):
    """Drop/grow every compressed weight; returns the changed mask entries (float64).

    Args:
      step: int64 scalar tensor; drop_fraction: scalar.
      data: [(inputs, gradients)] per target, recorded by a pass that takes
        the dense gradient (RigL): growth by gradient. None: random growth.
      grow_init: "zeros", "random_normal" or "random_uniform".
      counts: None (each weight drops and grows ``drop_count(count,
        drop_fraction)``), or per target ``(n_drop, n_grow)`` int scalars
        (redistribution; weights built with capacity, n_grow within it).
    """
    changed = tf.constant(0.0, tf.float64)
    for i, target in enumerate(self.targets):
      weight = target.weight
      values = weight.current_values()
      indices = weight.positions()
      n_drop, n_grow = counts[i] if counts is not None else (None, None)
      if weight.has_capacity:
        self._check_dynamic(weight)
        # The live prefix goes through the usual update; dead slots follow.
        count = weight.count()
        values, indices = values[:count], indices[:count]
      if self.min_fan_in:
        new_indices, source = self._fan_in_update(target, step, values, indices,
                                                  drop_fraction, data, i)
      elif self.static_shapes or kernels.in_xla_context():
        new_indices, source = self._static_update(target, step, values, indices,
                                                  drop_fraction, data, i)
      elif data is not None:
        a, d = data[i]
        block = weight.layer.block_size
        grower = lambda kept, k, a=a, d=d, w=weight, block=block: _update.rigl_grow(
            a, d, w.n_rows, w.n_cols, kept, k, block)
        new_indices, source = _update.update(values, indices, weight.size, drop_fraction,
                                             grower, n_drop, n_grow)
      else:
        grower = lambda kept, k, w=weight, seed=self._set_seed(target, step): _update.set_grow(
            w.size, kept, k, seed, w.capacity)
        new_indices, source = _update.update(values, indices, weight.size, drop_fraction,
                                             grower, n_drop, n_grow)
      changed += self._assign(target, step, weight.current_values(), new_indices, source,
                              grow_init)
    return changed

  # --- layer-wise redistribution (weights built with capacity) --------------

  def enable_gradient_taps(self, momentum, step):
    """A `GradientTap` per weight (momentum redistribution); True if any is new."""
    created = False
    for target in self.targets:
      target.tap, new = target.weight.layer.enable_gradient_tap(momentum, step)
      created = created or new
    return created

  def redistribution_inputs(self, drop_fraction, data, statistic):
    """What `keras_rigl.redistribution.redistributed_drops` needs, per target.

    Args:
      drop_fraction: scalar; data: RigL's [(inputs, gradients)] per target.
      statistic: "gradient" (mean ``|a^T d|`` over the live entries) or
        "momentum" (mean ``|EMA|`` of the tap over the live slots).

    Returns:
      [(n_active int32, n_drop int32, statistic float64, slots (Python int:
      the most the count may reach), finite bool)] per target. A weight whose
      values or gradient rows hold NaN/Inf neither drops nor grows (as a
      masked layer skipped for them) and has statistic 0.
    """
    out = []
    for i, target in enumerate(self.targets):
      weight = target.weight
      live = weight.live()
      count = tf.cast(weight.count(), tf.int32)
      values = weight.current_values()
      finite = tf.reduce_all(tf.math.is_finite(tf.boolean_mask(values, live)))
      if data is not None:  # The grow scores' rows (the masked storage checks its scores).
        a, d = data[i]
        if not a.dtype.is_integer:
          finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(a)))
        finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(d)))
      if statistic == "momentum":
        source = _keras.variable_tensor(target.tap.buffer)
      else:
        source = _statistics.gradient_at(a, d, weight.positions(), weight.n_cols)
      fraction = tf.where(finite, tf.cast(drop_fraction, tf.float64),
                          tf.constant(0.0, tf.float64))
      value = tf.where(finite, _statistics.mean_abs_live(source, live),
                       tf.constant(0.0, tf.float64))
      out.append((count, _update.drop_count(count, fraction), value, weight.capacity, finite))
    return out

  def check(self):
    """Refuses, before the first training step, what these layers cannot run:
    min_fan_in or static shapes on capacity layers, min_fan_in with static
    shapes (the same errors the update would raise)."""
    for target in self.targets:
      if target.weight.has_capacity:
        self._check_dynamic(target.weight)
      elif self.min_fan_in:
        self._check_fan_in(target.weight)

  def _check_dynamic(self, weight):
    """Capacity layers update with dynamic shapes only (their live count moves)."""
    if self.min_fan_in:
      raise ValueError(
          f"min_fan_in={self.min_fan_in} does not run on compressed layers built with "
          f"capacity ({weight.name}) yet. Build them with capacity=None (the default) "
          "to use min_fan_in, or use min_fan_in=0.")
    if self.static_shapes or kernels.in_xla_context():
      raise ValueError(
          f"Compressed layer {weight.name} was built with capacity: its live count moves, "
          "which static shapes (XLA, jit_compile, TPUStrategy, static_shapes=True) cannot "
          "express in the update. Run the update without XLA, or build the layer with "
          "capacity=None (no redistribution on it then).")

  def _set_seed(self, target, step):
    return tf.stack([tf.constant(target.key, tf.int64), step + (1 << 40)])

  def _check_fan_in(self, weight):
    if self.static_shapes or kernels.in_xla_context():
      raise ValueError(
          f"min_fan_in={self.min_fan_in} works with dynamic shapes only, not under XLA "
          f"(compressed layer {weight.name}: jit_compile, TPUStrategy or "
          "static_shapes=True). Use min_fan_in=0 there.")

  def _fan_in_update(self, target, step, values, indices, drop_fraction, data, i):
    """`min_fan_in` (dynamic shapes, as on the masked storage): RigL ranks by
    ``|a^T d|``, SET by uniform scores drawn block by block (O(N) time)."""
    weight = target.weight
    self._check_fan_in(weight)
    block = weight.layer.block_size
    if data is not None:
      a, d = data[i]
      blocks = _update.gradient_blocks(a, d, weight.n_rows, weight.n_cols, indices.dtype,
                                       block)
    else:
      blocks = _update.random_blocks(weight.n_rows, weight.n_cols,
                                     self._set_seed(target, step), indices.dtype, block)
    return _fan_in.update(values, indices, weight.n_rows, weight.n_cols, drop_fraction,
                          self.min_fan_in, blocks)

  def _static_update(self, target, step, values, indices, drop_fraction, data, i):
    """Under XLA (or `static_shapes`): the same choice with static shapes."""
    weight = target.weight
    max_count = int(math.floor(weight.capacity * self.max_fraction))
    if data is not None:
      a, d = data[i]
      grower = lambda still, k, n, a=a, d=d, w=weight: _static.rigl_grow_static(
          a, d, w.n_rows, w.n_cols, indices, still, k, w.layer.block_size)
    else:
      grower = lambda still, k, n, w=weight, seed=self._set_seed(target, step): \
          _static.set_grow_static(w.size, indices, still, k, n, seed)
    return _static.update_static(values, indices, drop_fraction, grower, max_count)

  def _assign(self, target, step, values, new_indices, source, grow_init):
    """Positions stay ascending: values and slots move with their entries.

    `new_indices` / `source` cover the new live entries; a weight with
    capacity pads them with dead slots (sentinel position, value 0, slots 0)
    and stores the new live count. Returns the changed mask entries (float64).
    """
    weight = target.weight
    new_indices = tf.cast(new_indices, weight.indices.dtype)
    old_count = tf.cast(weight.count(), tf.int32)
    new_count = tf.shape(new_indices)[0]
    if weight.has_capacity:
      new_indices, source = _capacity.pad(new_indices, source, weight.capacity, weight.size)
      source = tf.where(_capacity.live_mask(new_count, weight.capacity), source, -2)
      weight.count_variable.assign(tf.cast(new_count, weight.count_variable.dtype))
    live = source > -2
    fresh = tf.equal(source, -1)
    carried = tf.maximum(source, 0)
    weight.indices.assign(new_indices)
    survivors = tf.where(live, tf.gather(values, carried), tf.zeros([], values.dtype))
    init = self._grown_values(target, step, survivors, fresh, live, grow_init)
    weight.values.assign(tf.where(fresh, init, survivors))
    kept = tf.logical_and(live, tf.logical_not(fresh))
    moving = list(target.slots)
    if target.tap is not None:  # Momentum redistribution's EMA moves too.
      moving.append(target.tap.buffer)
    for slot in moving:
      value = _keras.variable_tensor(slot)  # The tap's: summed over replicas.
      slot.assign(tf.where(kept, tf.gather(value, carried), tf.zeros_like(value)))
    # Changed mask entries: the new connections, and the old ones not carried.
    new = tf.reduce_sum(tf.cast(fresh, tf.int32))
    gone = old_count - (new_count - new)
    return tf.cast(new + gone, tf.float64)

  def _grown_values(self, target, step, survivors, fresh, live, grow_init):
    count = tf.shape(fresh)
    if grow_init == "zeros":
      return tf.zeros(count, survivors.dtype)
    # Scale new weights like the layer's surviving ones (as SparseWrapper's).
    kept = tf.cast(tf.logical_and(live, tf.logical_not(fresh)), survivors.dtype)
    std = tf.sqrt(tf.reduce_sum(tf.square(survivors * kept)) /
                  tf.maximum(tf.reduce_sum(kept), 1.0))
    seed = tf.stack([tf.constant(target.key, tf.int64), step])
    if grow_init == "random_normal":
      noise = tf.random.stateless_normal(count, seed=seed, dtype=survivors.dtype, alg="philox")
    else:
      noise = tf.random.stateless_uniform(count, seed=seed, minval=-math.sqrt(3),
                                          maxval=math.sqrt(3), dtype=survivors.dtype,
                                          alg="philox")  # Same numbers under XLA.
    return noise * std
