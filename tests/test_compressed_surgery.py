"""sparsify(storage="compressed"), strip, sparsity_report, count_flops and export."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from keras_rigl.wrapper import SparseWrapper


def _convnet():
  keras.utils.set_random_seed(0)
  return keras.Sequential([
      keras.Input((6, 6, 3)),
      keras.layers.Conv2D(8, 3, name="c3"),
      keras.layers.Conv2D(12, 1, activation="relu", name="pw"),
      keras.layers.Conv2D(6, 1, strides=2, name="pw_strided"),
      keras.layers.Flatten(),
      keras.layers.Dense(20, activation="relu", name="fc"),
      keras.layers.Dense(4, name="out"),
  ])


def _x():
  return np.random.default_rng(0).normal(size=(3, 6, 6, 3)).astype("float32")


def test_compressed_keeps_the_masked_positions_and_values():
  model = _convnet()
  masked = kr.sparsify(model, 0.8, "erk", seed=4)
  compressed = kr.sparsify(model, 0.8, "erk", seed=4, storage="compressed")
  kinds = {l.name: type(l).__name__ for l in compressed.layers}
  assert kinds["pw"] == "SparsePointwiseConv2D" and kinds["fc"] == "SparseDense"
  # Unsupported for compressed storage: stay masked.
  assert kinds["sparse_c3"] == "SparseWrapper" and kinds["sparse_pw_strided"] == "SparseWrapper"
  np.testing.assert_allclose(compressed(_x()).numpy(), masked(_x()).numpy(), atol=1e-5)
  masked_by_name = {l.layer.name: l for l in masked.layers if isinstance(l, SparseWrapper)}
  for layer in compressed.layers:
    if isinstance(layer, kr.layers.CompressedLayer):
      mask = np.asarray(masked_by_name[layer.name].masked_weights[0][1]).reshape(-1)
      np.testing.assert_array_equal(np.sort(np.asarray(layer.kernel_indices)),
                                    np.flatnonzero(mask))
  assert kr.sparsity_report(compressed).nnz == kr.sparsity_report(masked).nnz
  rows = {(r.name, r.weight): r for r in kr.sparsity_report(compressed)}
  assert rows[("fc", "kernel")].shape == (24, 20)
  assert rows[("pw", "kernel")].shape == (1, 1, 8, 12)


def test_count_flops_agrees_with_masked():
  model = _convnet()
  masked = kr.count_flops(kr.sparsify(model, 0.8, "erk", seed=4))
  compressed = kr.count_flops(kr.sparsify(model, 0.8, "erk", seed=4, storage="compressed"))
  assert compressed.sparse == pytest.approx(masked.sparse)
  assert [r.density for r in compressed.layers] == pytest.approx([r.density for r in masked.layers])
  assert compressed.dense == pytest.approx(masked.dense)


def test_strip_builds_dense_kernels_within_the_limit():
  compressed = kr.sparsify(_convnet(), 0.8, "erk", storage="compressed")
  plain = kr.strip(compressed)
  assert [type(l).__name__ for l in plain.layers] == [
      "Conv2D", "Conv2D", "Conv2D", "Flatten", "Dense", "Dense"]
  np.testing.assert_allclose(plain(_x()).numpy(), compressed(_x()).numpy(), atol=1e-5)
  with pytest.raises(ValueError, match=r"'fc'.*24, 20.*480 entries.*max_dense_bytes"):
    kr.strip(compressed, max_dense_bytes=1000)
  kept = kr.strip(compressed, keep_compressed=True)
  assert isinstance(kept.get_layer("fc"), kr.layers.SparseDense)


def test_saved_model_stays_compressed(tmp_path):
  compressed = kr.sparsify(_convnet(), 0.9, "uniform", storage="compressed")
  path = kr.export(compressed, os.path.join(tmp_path, "sm"))
  loaded = tf.saved_model.load(path)
  sizes = {v.name.split(":")[0]: int(np.prod(v.shape)) for v in loaded.variables}
  assert not any(size == 24 * 20 for size in sizes.values())
  assert any("kernel_indices" in name for name in sizes)
  serve = loaded.signatures["serving_default"]
  out = list(serve(tf.constant(_x())).values())[0]
  np.testing.assert_allclose(out.numpy(), compressed(_x()).numpy(), atol=1e-5)


@pytest.mark.parametrize("kwargs, error, says", [
    (dict(storage="sparse"), ValueError, "storage must be one of"),
    (dict(storage="compressed", mask_init="dense"), ValueError, "mask_init='random'"),
])
def test_bad_storage_arguments(kwargs, error, says):
  with pytest.raises(error, match=says):
    kr.sparsify(_convnet(), 0.8, **kwargs)
