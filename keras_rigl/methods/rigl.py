"""RigL (Evci et al., 2020): grow the connections with the largest gradient.

By default the dense gradient is the train step's own (the gradient of the
loss w.r.t. ``W * M`` on the update step's batch, summed over replicas) and the
update runs inside the compiled train step (`keras_rigl.methods.in_step`), as
the authors' TF1 optimizer does. With `data` (rigl_tf2's behaviour) it comes
from `grad_accumulation_steps` batches of that data (see
`keras_rigl.methods.rigl_data`), taken through the model in training mode
inside a host-scheduled update; the model's other state is put back afterwards.
"""

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import backend
from keras_rigl.methods.drop_grow import DropGrowScheduler
from keras_rigl.methods.in_step import StepGradientTap
from keras_rigl.methods.rigl_data import (DATA_MISMATCH, as_dataset, check_data,
                                          compute_loss)
from keras_rigl.methods.validation import check_data_not_a_number, check_int
from keras_rigl.wrapper import capture_effective_weights, substitute_effective_weights


class RigLScheduler(DropGrowScheduler):
  """RigL: every `update_freq` steps, move connections to large dense gradients.

  On an update step (``begin_step <= step <= end_step`` and ``step %
  update_freq == 0``, where step is ``optimizer.iterations``, the number of
  optimizer steps taken) each SparseWrapper weight drops
  ``floor(n_active * drop_fraction(step))`` active connections of smallest
  ``|W|`` and grows as many connections with the largest ``|dL/dW|``, the
  gradient of the training loss (compiled loss plus regularisation, training
  mode) w.r.t. the effective weights ``W * M``, summed over
  `grad_accumulation_steps` batches of `data` and over replicas. Grown weights
  start at `grow_init`; their optimizer slots (momentum, Adam moments, EMA...)
  are reset to zero, as are those of dropped ones.

  The extra forward pass leaves the model as it found it apart from masks,
  weights and slots: BatchNormalization statistics, RNG states and metrics are
  put back. A weight whose grow scores (or values) hold NaN/Inf skips that
  update (mask, weights and slots unchanged) with a RuntimeWarning naming it and
  the step; `skipped_layers` lists ``(step, name)`` and the epoch logs count
  them in ``skipped_updates``.

  `data` is checked at the first `on_train_begin` against the model's inputs
  and compiled loss (a ValueError that starts with "RigLScheduler data"), is
  repeated as needed (a short dataset never ends training), and its iterator
  is kept across `fit` calls. A run resumed from a checkpoint (new callback,
  new process) reads the same batches as an uninterrupted one, provided `data`
  yields the same sequence each time it is iterated (e.g. ``shuffle(...,
  seed=...)``).

  Args:
    data: a batched `tf.data.Dataset` of ``(x, y)`` / ``(x, y, sample_weight)``,
      usually the training set; or a Python iterable/iterator of such batches,
      which is read once, kept in memory and cycled (use a Dataset for large
      data; an endless generator would fill memory).
    update_freq: steps between mask updates.
    drop_fraction: initial fraction of active connections that move.
    drop_fraction_schedule: "cosine" (default), "constant", "exponential"
      / "exponential_<k>", or a callable step -> fraction in [0, 1].
    begin_step, end_step: first and last step at which masks may change;
      end_step=None is 75% of the run's total steps (needs a known length).
    grow_init: "zeros" (paper), "random_normal" or "random_uniform" (scaled by
      the standard deviation of the layer's surviving weights).
    grad_accumulation_steps: batches whose gradients are summed per update.
    seed: seed of the random parts (random grow_init).
    redistribution: None (default: every layer keeps its count), "gradient"
      or "momentum". With one of these, layer counts move between layers in
      proportion to a per-layer statistic of its active weights (the
      reproducibility report's redistribution experiment, after SNFS):
      "gradient" is the mean ``|dL/dW|`` on the update's batch (no extra
      cost), "momentum" the mean ``|EMA of dL/dW|`` (momentum 0.9) of the
      dense gradient of every training step (see `keras_rigl.SNFSScheduler`).
      Each layer still regrows ``floor(n_active * drop_fraction)``
      connections, as without redistribution; the counts move through the
      drop: a favoured layer drops up to 1/4 of that fewer of its weights, a
      disfavoured one up to 1/4 more (`keras_rigl.redistribution.
      redistributed_drops`: no update changes a layer abruptly, and no layer
      grows more new connections than without redistribution). The total count of
      ones over all sparse weights stays exact while layer counts (and so the
      inference FLOPs) move: `count_history` and `flops_history` hold
      ``(step, {weight: active count})`` and ``(step, inference FLOPs
      ratio)`` after every update. Compressed layers take part when built
      with capacity (``kr.sparsify(..., storage="compressed", capacity=1.25)``):
      a layer's count then moves up to its slots (a layer at capacity cannot
      gain; the total stays exact); "gradient" picks the same connections and
      counts as on masked layers while no layer reaches its capacity;
      "momentum" too until connections have been grown, whose moving average
      starts at zero on compressed layers (the masked storage's tracks every
      position; see docs/compressed_schedulers.md).
    min_fan_in: int >= 0 (default 0: the paper's update). If > 0, every output
      unit (last axis of a weight) keeps at least ``min(min_fan_in, its
      possible inputs)`` active inputs: the drop spares each unit's strongest
      ``min_fan_in`` connections, and units below the minimum are first
      refilled with their best-scoring inputs out of the update's growth
      budget (neediest first), so the count of ones stays exact (see
      `keras_rigl.masks.min_fan_in_update`; clamped per weight to
      ``n_active // units``). At high sparsity RigL otherwise cuts units off
      for good (a ReLU unit without inputs gets no gradient).
      Both storages (compressed: `keras_rigl.layers.fan_in`, same
      connections), dynamic shapes only (not under TPUStrategy).

  Logs ``drop_fraction``, ``mask_change`` (fraction of mask entries that
  changed at the last update) and ``skipped_updates`` into the epoch logs;
  with `redistribution`, also ``active_weights`` (total count of ones) and
  ``flops_ratio`` (inference FLOPs / dense after the last update).

  Example:
  >>> import numpy as np, tensorflow as tf, keras_rigl as kr
  >>> from keras_rigl._keras import keras
  >>> x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
  >>> y = (x[:, 0] > 0).astype("int32")
  >>> train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  >>> model = kr.sparsify(keras.Sequential([keras.Input((12,)),
  ...     keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)]), 0.8)
  >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  >>> rigl = kr.RigLScheduler(train, update_freq=2, end_step=6)
  >>> history = model.fit(train, epochs=2, callbacks=[rigl], verbose=0)
  >>> rigl.updates, rigl.last_update_step
  (4, 6)
  """

  def __init__(self, data=None, update_freq=100, drop_fraction=0.3,
               drop_fraction_schedule="cosine", begin_step=0, end_step=None,
               grow_init="zeros", grad_accumulation_steps=1, seed=0,
               redistribution=None, min_fan_in=0):
    check_data_not_a_number(data, "RigLScheduler", "batches for a separate gradient pass")
    super().__init__(update_freq, drop_fraction, drop_fraction_schedule, begin_step,
                     end_step, grow_init, seed, redistribution=redistribution,
                     min_fan_in=min_fan_in)
    self.grad_accumulation_steps = check_int("grad_accumulation_steps",
                                              grad_accumulation_steps, 1,
                                              "RigLScheduler: ")
    if data is None:
      if redistribution is not None:
        raise ValueError(
            f"RigLScheduler: redistribution={redistribution!r} runs with the separate "
            "gradient pass only: pass data=... (a batched tf.data.Dataset of the "
            "training set), or redistribution=None for the update inside the train step.")
      if self.grad_accumulation_steps != 1:
        raise ValueError(
            f"RigLScheduler: grad_accumulation_steps={grad_accumulation_steps} sums the "
            "gradients of several batches of `data`; without data the grow scores come "
            "from the train step's own batch. Pass data=... or grad_accumulation_steps=1.")
    self.data = None if data is None else as_dataset(data)
    self._iterator = None
    self._iterator_for = None  # The strategy the iterator was made for.
    self._consumed = 0         # Batches taken from the iterator so far.
    self._checked_for = None   # The model `data` was checked against.

  @property
  def in_step(self):
    """True when grow scores come from the train step (no `data`)."""
    return self.data is None

  def _enable_step_taps(self):
    for wrapper in {id(t.wrapper): t.wrapper for t in self._targets}.values():
      wrapper.use_gradient_taps([StepGradientTap() for _ in wrapper.weight_keys])
    for t in self._targets:
      t.tap = t.wrapper.gradient_taps[t.index]

  def _start_fit(self, step):
    if self._checked_for is not self.model:
      check_data(self.data, self.model)
      self._checked_for = self.model
    # Resume: skip the batches earlier updates consumed, so an interrupted run
    # sees the same gradient batches as an uninterrupted one. Updates happened
    # at steps 0 .. step-1; the one due at `step` (if any) is still to come.
    consumed = self._updates_before(step - 1) * self.grad_accumulation_steps
    strategy = backend.distribute_strategy(self.model)
    if (self._iterator is not None and self._iterator_for is strategy and
        self._consumed == consumed):
      return  # Same position: keep the iterator (and its shuffle buffer).
    dataset = self.data.repeat()
    if consumed:
      dataset = dataset.skip(consumed)
    # One batch ready in the background, so an update does not wait for input.
    dataset = dataset.prefetch(1)
    self._iterator = iter(dataset if strategy is None else
                          strategy.experimental_distribute_dataset(dataset))
    self._iterator_for = strategy
    self._consumed = consumed

  def _updates_before(self, step):
    """How many update steps there are in [0, step]."""
    first, last = self.begin_step, min(step, self._end_step)
    if last < first:
      return 0
    return last // self.update_freq - (first - 1) // self.update_freq

  def _update_argument(self, step, check=True):
    return (self._scalar(self.current_drop_fraction(step, check)), self._iterator)

  def _run_update(self, step, argument=None):
    try:
      super()._run_update(step, argument)
    except backend.tf_types("errors.OutOfRangeError"):
      # Keras would read this as the end of the training data and stop.
      raise ValueError(
          "RigLScheduler data ran out of batches although it is repeated: it is "
          "empty or yields nothing on a second pass. Pass a dataset or iterable "
          "that yields batches every time it is iterated.") from None
    self._consumed += self.grad_accumulation_steps

  def _grow_scores(self, step, iterator):
    if self.in_step:  # The train step's dense gradients, summed over replicas.
      if not backend.IS_TENSORFLOW:  # PyTorch: the gradients of the step itself.
        ops = _keras.keras.ops
        return [ops.abs(ops.cast(g, "float32")) for g in iterator]
      return [tf.abs(g) for g in iterator]
    if not backend.IS_TENSORFLOW:  # JAX / PyTorch: the backend seam's gradient.
      totals = None
      for _ in range(self.grad_accumulation_steps):
        grads = backend.training_loss_gradients(
            self.model, next(iterator), [(t.wrapper, t.index) for t in self._targets],
            substitute_effective_weights)
        totals = grads if totals is None else [a + b for a, b in zip(totals, grads)]
      return [np.abs(g) for g in totals]
    model = self.model
    strategy = model.distribute_strategy
    targets = self._targets
    position = {(id(t.wrapper), t.index): i for i, t in enumerate(targets)}
    optimizer = model.optimizer
    metric_variables = self._metric_variables
    compressed = self._compressed

    def replica_gradients(batch):
      x, y, sample_weight = _keras.unpack_batch(batch)
      # The extra forward pass must not show up in the epoch's loss/metrics.
      saved = [tf.identity(_keras.variable_tensor(v)) for v in metric_variables]
      with tf.GradientTape() as tape:
        try:
          with capture_effective_weights() as records, \
              compressed.capture() as c_records:
            y_pred = model(x, training=True)
          loss = compute_loss(model, x, y, y_pred, sample_weight)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
          raise ValueError(DATA_MISMATCH.format(error=error)) from error
        loss = _keras.scale_loss_for_gradients(optimizer, loss)
      tensors = [tensor for _, _, tensor in records]
      grads = tape.gradient(loss, tensors + compressed.outputs(c_records))
      grads, c_grads = grads[:len(tensors)], grads[len(tensors):]
      with tf.control_dependencies([loss]):
        for variable, value in zip(metric_variables, saved):
          variable.assign(value)
      totals = [tf.zeros(t.weight.shape, tf.float32) for t in targets]
      for (wrapper, index, _), grad in zip(records, grads):
        if grad is None:
          continue
        slot = position.get((id(wrapper), index))
        if slot is not None:  # A shared layer adds up all its uses.
          totals[slot] += tf.cast(tf.convert_to_tensor(grad), tf.float32)
      return totals, compressed.replica_data(c_records, c_grads)

    # BatchNormalization statistics, RNG seeds...: as they were before the pass.
    state = [tf.identity(_keras.variable_tensor(v)) for v in self._state_variables]
    totals = [tf.zeros(t.weight.shape, tf.float32) for t in targets]
    gathered = []
    for _ in range(self.grad_accumulation_steps):
      per_replica, c_per_replica = strategy.run(replica_gradients, args=(next(iterator),))
      for i, grad in enumerate(per_replica):
        totals[i] += strategy.reduce(tf.distribute.ReduceOp.SUM, grad, axis=None)
      gathered.append(compressed.gather(strategy, c_per_replica))
    # Compressed layers: rows of all batches and replicas (a^T d sums them).
    self._compressed_data = [tuple(tf.concat(parts, 0) for parts in zip(*per_target))
                             for per_target in zip(*gathered)]
    with tf.control_dependencies(totals):
      for variable, value in zip(self._state_variables, state):
        variable.assign(value)
    return [tf.abs(g) for g in totals]

