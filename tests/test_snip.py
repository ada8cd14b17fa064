"""SNIP: one-shot pruning at initialisation by |g * w|."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from tests.conftest import make_mlp, masked_pairs, sparse_ce


def _linear_model():
  keras.utils.set_random_seed(3)
  return keras.Sequential([keras.Input((4,)),
                           keras.layers.Dense(3, use_bias=False, name="fc")])


def _sum_loss(y_true, y_pred):
  return tf.reduce_sum(tf.cast(y_true, y_pred.dtype) * y_pred, axis=-1)


def test_hand_checked_scores():
  model = _linear_model()
  kernel = np.asarray(model.layers[0].kernel)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 4)).astype("float32")
  y = rng.normal(size=(8, 3)).astype("float32")
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
  sparse = kr.snip(model, data, 0.5, batches=2, loss=_sum_loss)
  # loss = mean over the batch of sum_j y_j (x W)_j, so dL/dW = x^T y / 4 per batch.
  grad = x[:4].T @ y[:4] / 4 + x[4:].T @ y[4:] / 4
  scores = np.abs(grad * kernel).ravel()
  expected = np.zeros(12, bool)
  expected[np.argsort(-scores)[:6]] = True
  (weight, mask), = masked_pairs(sparse)
  np.testing.assert_array_equal(mask.ravel() > 0, expected)
  np.testing.assert_allclose(weight.ravel(), np.where(expected, kernel.ravel(), 0))


def test_batches_argument_counts(toy_dataset):
  one = kr.snip(make_mlp(), toy_dataset, 0.7, batches=1, loss=sparse_ce())
  three = kr.snip(make_mlp(), toy_dataset, 0.7, batches=3, loss=sparse_ce())
  assert any(not np.array_equal(a[1], b[1])
             for a, b in zip(masked_pairs(one), masked_pairs(three)))


def test_global_keeps_the_total_count_and_layers_differ(toy_dataset):
  keras.utils.set_random_seed(0)
  sparse = kr.snip(make_mlp(), toy_dataset, 0.8, loss=sparse_ce())
  pairs = masked_pairs(sparse)
  total = sum(m.size for _, m in pairs)
  assert sum(int(m.sum()) for _, m in pairs) == total - int(np.floor(0.8 * total))
  assert len({round(1 - m.mean(), 3) for _, m in pairs}) > 1


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_layerwise_distributions_follow_sparsify(toy_dataset, distribution):
  model = make_mlp()
  sparse = kr.snip(model, toy_dataset, 0.8, distribution, loss=sparse_ce())
  reference = kr.sparsify(model, 0.8, distribution)
  assert [int(m.sum()) for _, m in masked_pairs(sparse)] == [
      int(m.sum()) for _, m in masked_pairs(reference)]


def test_custom_sparsity_is_kept_under_global(toy_dataset):
  sparse = kr.snip(make_mlp(), toy_dataset, 0.8, custom_sparsity={"logits": 0.5},
                   loss=sparse_ce())
  logits = [l for l in sparse.layers if l.name == "sparse_logits"][0]
  assert logits.sparsity == pytest.approx(0.5, abs=0.02)


def test_compiled_loss_is_used_and_training_is_static(toy_dataset):
  model = make_mlp()
  model.compile("sgd", sparse_ce())
  sparse = kr.snip(model, toy_dataset, 0.8)
  before = [m.copy() for _, m in masked_pairs(sparse)]
  sparse.compile(keras.optimizers.Adam(0.01), sparse_ce())
  sparse.fit(toy_dataset, epochs=1, verbose=0)
  for (weight, mask), old in zip(masked_pairs(sparse), before):
    np.testing.assert_array_equal(mask, old)
    assert np.all(weight[mask == 0] == 0)


def test_non_finite_gradient_names_the_layer():
  model = _linear_model()
  x = np.full((4, 4), np.nan, "float32")
  data = tf.data.Dataset.from_tensor_slices((x, np.ones((4, 3), "float32"))).batch(4)
  with pytest.raises(ValueError, match="'fc'.*not finite"):
    kr.snip(model, data, 0.5, loss=_sum_loss)


def test_batch_norm_statistics_are_left_as_they_were():
  keras.utils.set_random_seed(1)
  model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="fc1"),
                            keras.layers.BatchNormalization(name="bn"),
                            keras.layers.Dropout(0.5, name="drop"),
                            keras.layers.Dense(3, name="fc2")])
  x = np.random.default_rng(0).normal(3.0, 2.0, size=(32, 6)).astype("float32")
  data = tf.data.Dataset.from_tensor_slices((x, np.zeros(32, "int32"))).batch(16)
  before = [np.array(v) for v in model.get_layer("bn").non_trainable_weights]
  sparse = kr.snip(model, data, 0.5, batches=2, loss=sparse_ce())
  after = [np.array(v) for v in sparse.get_layer("bn").non_trainable_weights]
  assert len(after) == 2  # Moving mean and variance.
  for b, a in zip(before, after):
    np.testing.assert_array_equal(a, b)
  # The masks are SNIP's (not all ones), and the model computes as before at inference.
  assert 0 < sum(m.sum() for _, m in masked_pairs(sparse)) < 8 * 6 + 8 * 3
