"""count_flops for recurrent, TimeDistributed, EinsumDense and attention layers."""

import numpy as np
import pytest

import keras_rigl as kr
from keras_rigl._keras import keras

L = keras.layers


def _gru_step(n_in, units, d_kernel=1.0, d_recurrent=1.0):
  # 3 gates * units outputs of 2 K d + 1, plus 5 element-wise ops per unit.
  return 2 * (n_in * d_kernel + units * d_recurrent) * 3 * units + 3 * units + 5 * units


@pytest.mark.parametrize("layer, gates, elementwise", [
    (lambda: L.SimpleRNN(16), 1, 0), (lambda: L.LSTM(16), 4, 5), (lambda: L.GRU(16), 3, 5)])
def test_recurrent_layer_per_step_times_length(layer, gates, elementwise):
  model = keras.Sequential([keras.Input((10, 8)), layer()])
  result = kr.count_flops(model)
  per_step = 2 * (8 + 16) * gates * 16 + gates * 16 + elementwise * 16
  assert result.dense == 10 * per_step == result.sparse
  assert result.sequence_length == 10


def test_unknown_length_needs_sequence_length():
  model = keras.Sequential([keras.Input((None, 8)), L.GRU(16, return_sequences=True),
                            L.Dense(4)])
  with pytest.raises(ValueError, match="sequence_length"):
    kr.count_flops(model)
  result = kr.count_flops(model, sequence_length=7)
  assert result.dense == 7 * _gru_step(8, 16) + 7 * 4 * (2 * 16 + 1)
  assert result.sequence_length == 7
  assert "7 time steps" in result.table()
  with pytest.raises(ValueError, match="sequence_length must be a positive integer"):
    kr.count_flops(model, sequence_length=0)


def test_sparse_recurrent_counts_mask_densities():
  model = keras.Sequential([keras.Input((5, 8)), L.GRU(16, name="gru")])
  sparse = kr.sparsify(model, 0.5, distribution="uniform",
                       custom_sparsity={"gru/recurrent_kernel": 0.75})
  result = kr.count_flops(sparse)
  assert result.sparse == pytest.approx(5 * _gru_step(8, 16, 0.5, 0.25))
  assert result.layers[0].masked
  # The same through names, without masks.
  named = kr.count_flops(model, sparsities={"gru/kernel": 0.5, "gru/recurrent_kernel": 0.75})
  assert named.sparse == pytest.approx(result.sparse)


def test_bidirectional_counts_both_directions():
  model = keras.Sequential([keras.Input((5, 8)), L.Bidirectional(L.GRU(16))])
  assert kr.count_flops(model).dense == 2 * 5 * _gru_step(8, 16)


def test_time_distributed_equals_dense_on_sequence():
  td = keras.Sequential([keras.Input((6, 8)), L.TimeDistributed(L.Dense(4))])
  dense = keras.Sequential([keras.Input((6, 8)), L.Dense(4)])
  assert kr.count_flops(td).dense == kr.count_flops(dense).dense == 6 * 4 * (2 * 8 + 1)
  assert kr.count_flops(td).layers[0].type == "TimeDistributed(Dense)"


def test_einsum_dense_counts_like_dense():
  model = keras.Sequential([keras.Input((6, 8)),
                            L.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3))])
  assert kr.count_flops(model).dense == 6 * 2 * 3 * (2 * 8 + 1)


def test_attention_projections_like_dense_scores_optional():
  t, d, heads, key_dim = 6, 8, 2, 4
  inputs = keras.Input((t, d))
  model = keras.Model(inputs, L.MultiHeadAttention(heads, key_dim, name="mha")(inputs, inputs))
  projections = 3 * t * heads * key_dim * (2 * d + 1) + t * d * (2 * heads * key_dim + 1)
  assert kr.count_flops(model).dense == projections
  scores = heads * (t * t * (2 * key_dim - 1) + 3 * t * t + t * key_dim
                    + t * key_dim * (2 * t - 1))
  with_scores = kr.count_flops(model, include_attention_scores=True)
  assert with_scores.dense == projections + scores
  sparse = kr.sparsify(model, 0.5, distribution="uniform")
  result = kr.count_flops(sparse, include_attention_scores=True)
  expected = (3 * t * heads * key_dim * (2 * d * 0.5 + 1)
              + t * d * (2 * heads * key_dim * 0.5 + 1) + scores)
  assert result.sparse == pytest.approx(expected)
  assert kr.flops.kernel_shapes(model)["mha/output_kernel"] == (8, 8)


def test_training_flops_of_a_sparse_gru():
  model = keras.Sequential([keras.Input((5, 8)), L.GRU(16, name="gru")])
  sparse = kr.sparsify(model, 0.75, distribution="uniform")
  count = kr.count_flops(sparse)
  rigl = kr.training_flops(count, "rigl", steps=100, batch_size=4)
  static = kr.training_flops(count, "static", steps=100, batch_size=4)
  dense = kr.training_flops(count, "dense", steps=100, batch_size=4)
  assert static < rigl < dense
