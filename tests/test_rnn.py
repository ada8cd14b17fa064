"""Recurrent, TimeDistributed and EinsumDense layers under SparseWrapper/sparsify."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import IS_KERAS3, keras
from keras_rigl.wrapper import distribution_shapes

L = keras.layers

# (factory, input shape, expected mask keys).
RECURRENT_CASES = {
    "simple_rnn": (lambda: L.SimpleRNN(6, name="rnn"), (2, 5, 3),
                   ["kernel", "recurrent_kernel"]),
    "lstm": (lambda: L.LSTM(6, return_sequences=True, name="rnn"), (2, 5, 3),
             ["kernel", "recurrent_kernel"]),
    "gru": (lambda: L.GRU(6, name="rnn"), (2, 5, 3), ["kernel", "recurrent_kernel"]),
    "bidirectional_gru": (
        lambda: L.Bidirectional(L.GRU(6, return_sequences=True), name="rnn"), (2, 5, 3),
        ["forward_kernel", "forward_recurrent_kernel", "backward_kernel",
         "backward_recurrent_kernel"]),
    "bidirectional_lstm": (lambda: L.Bidirectional(L.LSTM(4), name="rnn"), (2, 5, 3),
                           ["forward_kernel", "forward_recurrent_kernel",
                            "backward_kernel", "backward_recurrent_kernel"]),
    "time_distributed_dense": (lambda: L.TimeDistributed(L.Dense(4), name="rnn"),
                               (2, 5, 3), ["kernel"]),
    "time_distributed_conv": (
        lambda: L.TimeDistributed(L.Conv2D(4, 3, padding="same"), name="rnn"),
        (2, 3, 6, 6, 2), ["kernel"]),
    "einsum_dense": (lambda: L.EinsumDense("abc,cd->abd", output_shape=(None, 4),
                                           bias_axes="d", name="rnn"),
                     (2, 5, 3), ["kernel"]),
}


def _zeros(array):
  return int(np.sum(np.asarray(array) == 0))


def _x(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _plain_copy(wrapper):
  """The wrapped layer rebuilt from config, holding W * M (like strip)."""
  inner = wrapper.layer.__class__.from_config(wrapper.layer.get_config())
  return inner


@pytest.mark.parametrize("case", sorted(RECURRENT_CASES))
def test_wraps_with_exact_zero_counts_and_masks_the_forward_pass(case):
  make, shape, keys = RECURRENT_CASES[case]
  keras.utils.set_random_seed(0)
  layer = kr.SparseWrapper(make(), sparsity=0.75, seed=3)
  x = _x(shape)
  y = np.asarray(layer(x))
  assert layer.weight_keys == keys
  for (weight, mask), key in zip(layer.masked_weights, layer.weight_keys):
    size = int(np.prod(weight.shape))
    assert _zeros(mask) == int(np.floor(0.75 * size)), key
    # Stored inactive weights are zero; biases are never masked.
    assert np.all(np.asarray(weight)[np.asarray(mask) == 0] == 0), key
    assert "bias" not in weight.name
  # The forward pass equals the plain layer holding W * M.
  inputs = keras.Input(shape[1:])
  plain = kr.strip(keras.Model(inputs, layer(inputs)))
  np.testing.assert_allclose(np.asarray(plain(x)), y, rtol=1e-5, atol=1e-6)
  # And it does use the masks: setting the kept weights to zero changes it.
  for weight, mask in layer.masked_weights:
    weight.assign(np.asarray(weight) * 0.0)
  assert not np.allclose(np.asarray(layer(x)), y)


def test_recurrent_kernels_are_substituted_through_time():
  """Only W * M reaches the cell: a weight behind a zero mask never matters."""
  layer = kr.SparseWrapper(L.LSTM(5), sparsity=0.5)
  x = _x((3, 7, 4))
  layer(x)
  before = np.asarray(layer(x))
  for weight, mask in layer.masked_weights:
    value = np.asarray(weight)
    value[np.asarray(mask) == 0] = 100.0  # Garbage at inactive positions.
    weight.assign(value)
  np.testing.assert_allclose(np.asarray(layer(x)), before, rtol=1e-5, atol=1e-6)


def _lm(vocab=20, units=8, bidirectional=False):
  inputs = keras.Input((6,), dtype="int32")
  h = L.Embedding(vocab, 8, name="embed")(inputs)
  rnn = L.GRU(units, return_sequences=True, name="gru")
  h = L.Bidirectional(rnn, name="bigru")(h) if bidirectional else rnn(h)
  h = L.TimeDistributed(L.Dense(8, activation="relu"), name="td")(h)
  return keras.Model(inputs, L.Dense(vocab, name="logits")(h))


def _lm_data(vocab=20, n=64, seed=0):
  r = np.random.default_rng(seed)
  x = r.integers(0, vocab, size=(n, 6)).astype("int32")
  y = np.roll(x, -1, axis=1)
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(16, drop_remainder=True)


def _loss():
  return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_sparsify_and_no_inactive_weight_moves_with_adam(bidirectional):
  keras.utils.set_random_seed(0)
  model = kr.sparsify(_lm(bidirectional=bidirectional), 0.75, distribution="uniform",
                      exclude=["embed"])
  wrapped = {l.layer.name: l.weight_keys for l in model.layers
             if isinstance(l, kr.SparseWrapper)}
  rnn = "bigru" if bidirectional else "gru"
  assert set(wrapped) == {rnn, "td", "logits"}
  model.compile(keras.optimizers.Adam(0.05), _loss())
  model.fit(_lm_data(), epochs=2, verbose=0)
  for layer in model.layers:
    if isinstance(layer, kr.SparseWrapper):
      for weight, mask in layer.masked_weights:
        w, m = np.asarray(weight), np.asarray(mask)
        assert np.all(w[m == 0] == 0)
        assert np.count_nonzero(w[m == 1]) > 0.9 * m.sum()
        assert _zeros(m) == int(np.floor(0.75 * m.size))


@pytest.mark.parametrize("scheduler", ["rigl", "set"])
def test_rigl_and_set_move_recurrent_masks_with_constant_counts(scheduler):
  keras.utils.set_random_seed(0)
  model = kr.sparsify(_lm(), 0.75, distribution="uniform", exclude=["embed"])
  gru = model.get_layer("sparse_gru")
  before = [np.asarray(m).copy() for _, m in gru.masked_weights]
  data = _lm_data()
  make = kr.RigLScheduler if scheduler == "rigl" else kr.SETScheduler
  callback = make(data, update_freq=2, drop_fraction=0.3, end_step=6)
  model.compile(keras.optimizers.Adam(0.01), _loss())
  model.fit(data, epochs=2, verbose=0, callbacks=[callback])
  for (weight, mask), old in zip(gru.masked_weights, before):
    new = np.asarray(mask)
    assert new.sum() == old.sum()  # Constant count of ones.
    assert np.any(new != old)      # Both kernel and recurrent_kernel moved.
    assert np.all(np.asarray(weight)[new == 0] == 0)


def test_magnitude_pruning_reaches_target_on_recurrent_kernels():
  keras.utils.set_random_seed(0)
  model = kr.sparsify(_lm(), 0.75, distribution="uniform", exclude=["embed"],
                      mask_init="dense")
  gru = model.get_layer("sparse_gru")
  assert gru.sparsity == 0.0
  data = _lm_data()
  model.compile(keras.optimizers.Adam(0.01), _loss())
  model.fit(data, epochs=2, verbose=0, callbacks=[
      kr.MagnitudePruningScheduler(update_freq=1, begin_step=0, end_step=4)])
  for weight, mask in gru.masked_weights:
    m = np.asarray(mask)
    assert _zeros(m) == int(np.floor(0.75 * m.size))


def test_bidirectional_gru_round_trips_keras_file_and_strip(tmp_path):
  keras.utils.set_random_seed(0)
  model = kr.sparsify(_lm(bidirectional=True), 0.75, distribution="erk",
                      exclude=["embed"])
  model.compile(keras.optimizers.Adam(0.01), _loss())
  model.fit(_lm_data(), epochs=1, verbose=0)
  x = next(iter(_lm_data()))[0]
  y = np.asarray(model(x))
  path = str(tmp_path / "bigru.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(np.asarray(loaded(x)), y, rtol=1e-5, atol=1e-6)
  bigru = loaded.get_layer("sparse_bigru")
  original = model.get_layer("sparse_bigru")
  for (_, m1), (_, m2) in zip(original.masked_weights, bigru.masked_weights):
    np.testing.assert_array_equal(np.asarray(m1), np.asarray(m2))
  plain = kr.strip(loaded)
  assert not any(isinstance(l, kr.SparseWrapper) for l in plain.layers)
  np.testing.assert_allclose(np.asarray(plain(x)), y, rtol=1e-5, atol=1e-6)
  clone = keras.models.clone_model(model)
  assert isinstance(clone.get_layer("sparse_bigru"), kr.SparseWrapper)
  report = kr.sparsity_report(model)
  assert {r.weight for r in report if r.name == "bigru"} == {
      "forward_kernel", "forward_recurrent_kernel", "backward_kernel",
      "backward_recurrent_kernel"}


def test_distribution_shapes_and_erk():
  gru = L.GRU(16)
  gru.build((None, 5, 8))
  assert distribution_shapes(gru) == {"kernel": (8, 48), "recurrent_kernel": (16, 48)}
  einsum = L.EinsumDense("abc,cde->abde", output_shape=(None, 2, 4))
  einsum.build((None, 5, 8))
  assert tuple(einsum.kernel.shape) == (8, 2, 4)
  assert distribution_shapes(einsum) == {"kernel": (8, 8)}
  model = kr.sparsify(_lm(), 0.75, distribution="erk", exclude=["embed"])
  rows = [r for r in kr.sparsity_report(model) if r.name != "embed"]
  assert abs(1 - sum(r.nnz for r in rows) / sum(r.size for r in rows) - 0.75) < 0.01


def test_custom_sparsity_per_recurrent_kernel():
  model = kr.sparsify(_lm(), 0.5, distribution="uniform", exclude=["embed"],
                      custom_sparsity={"gru/recurrent_kernel": 0.9})
  gru = model.get_layer("sparse_gru")
  kernel, recurrent = (np.asarray(m) for _, m in gru.masked_weights)
  assert _zeros(recurrent) == int(np.floor(0.9 * recurrent.size))
  assert _zeros(kernel) == int(np.floor(0.5 * kernel.size))


def test_unsupported_cell_is_refused_clearly():
  class Cell(L.Layer):
    state_size = 3

    def call(self, inputs, states):
      return inputs[:, :3], states

  with pytest.raises(ValueError, match="SimpleRNN/LSTM/GRU"):
    kr.SparseWrapper(L.RNN(Cell()))


def test_sparsity_report_counts_recurrent_kernels_once():
  rows = [(r.name, r.weight) for r in kr.sparsity_report(_lm(bidirectional=True))]
  assert ("bigru", "forward_recurrent_kernel") in rows
  assert [name for name, _ in rows].count("bigru") == 4
  assert ("td", "kernel") in rows and len(rows) == len(set(rows)) == 7


class _Snapshot(keras.callbacks.Callback):
  """Weights, masks and Adam slots of every wrapper when each step starts."""

  def __init__(self):
    super().__init__()
    self.states = []

  def on_train_batch_begin(self, batch, logs=None):
    from keras_rigl import _keras  # pylint: disable=g-import-not-at-top
    state = []
    for layer in self.model.layers:
      if isinstance(layer, kr.SparseWrapper):
        for w, m in layer.masked_weights:
          slots = _keras.optimizer_slots(self.model.optimizer, w)
          state.append((np.asarray(w).copy(), np.asarray(m).copy(),
                        [np.asarray(s).copy() for s in slots]))
    self.states.append(state)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_grown_recurrent_weights_and_adam_slots_start_at_zero(bidirectional):
  keras.utils.set_random_seed(0)
  model = kr.sparsify(_lm(bidirectional=bidirectional), 0.75, distribution="uniform",
                      exclude=["embed"])
  model.compile(keras.optimizers.Adam(0.01), _loss())
  data = _lm_data()
  before, after = _Snapshot(), _Snapshot()
  rigl = kr.RigLScheduler(data, update_freq=3, drop_fraction=0.3,
                          drop_fraction_schedule="constant", begin_step=3, end_step=3)
  model.fit(data, epochs=1, callbacks=[before, rigl, after], verbose=0)
  assert rigl.updates == 1
  for (w0, m0, slots0), (w1, m1, slots1) in zip(before.states[3], after.states[3]):
    assert len(slots1) == 2  # Adam's two moments.
    grown, kept, changed = (m1 == 1) & (m0 == 0), (m1 == 1) & (m0 == 1), m1 != m0
    assert grown.any()
    assert np.all(w1[grown] == 0)
    np.testing.assert_array_equal(w1[kept], w0[kept])
    for s0, s1 in zip(slots0, slots1):
      assert np.all(s1[changed] == 0)
      np.testing.assert_array_equal(s1[kept], s0[kept])


def test_export_saved_model_of_sparse_gru(tmp_path):
  keras.utils.set_random_seed(0)
  model = kr.sparsify(_lm(), 0.75, distribution="uniform", exclude=["embed"])
  x = next(iter(_lm_data()))[0]
  path = str(tmp_path / "saved")
  kr.export(model, path)
  loaded = tf.saved_model.load(path)
  out = loaded.signatures["serving_default"](tf.constant(x))
  np.testing.assert_allclose(next(iter(out.values())).numpy(), np.asarray(model(x)),
                             rtol=1e-5, atol=1e-5)
