"""The compressed update with static shapes: compiles under XLA and equals the eager update."""

import numpy as np
import pytest
import tensorflow as tf

from keras_rigl.layers import static_update as S
from keras_rigl.layers import update as U

from test_compressed_layers import largest_static_tensor
from test_compressed_update import _masked, _problem

N_ROWS, N_COLS = 40, 30


def _dynamic(values, positions, a, d, fraction, block=100):
  grow = lambda kept, k: U.rigl_grow(a, d, N_ROWS, N_COLS, kept, k, block_elements=block)
  new, source = U.update(tf.constant(values), tf.constant(positions), N_ROWS * N_COLS,
                         fraction, grow)
  return new.numpy(), source.numpy()


def _static_fn(a, d, max_count, block=100, ids=False):
  def fn(values, positions, fraction):
    grow = lambda still, k, n: S.rigl_grow_static(a, d, N_ROWS, N_COLS, positions, still, k,
                                                  block_elements=block)
    return S.update_static(values, positions, fraction, grow, max_count)
  return fn


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fraction", [0.1, 0.3, 1.0])
@pytest.mark.parametrize("bound", ["exact", "loose"])
def test_xla_update_equals_eager_update(seed, fraction, bound):
  positions, values, a, d = _problem(seed)  # Integer scores: many ties.
  nnz = len(positions)
  max_count = int(U.drop_count(nnz, fraction)) if bound == "exact" else nnz
  max_count = max(max_count, 1)
  expected_new, expected_source = _dynamic(values, positions, a, d, fraction)
  fn = _static_fn(a, d, max_count)
  args = (tf.constant(values), tf.constant(positions), tf.constant(fraction, tf.float32))
  for run in (fn, tf.function(fn, jit_compile=True)):
    new, source = run(*args)
    np.testing.assert_array_equal(new.numpy(), expected_new)
    np.testing.assert_array_equal(source.numpy(), expected_source)
  np.testing.assert_array_equal(expected_new, _masked(positions, values, a, d, fraction))


@pytest.mark.parametrize("block", [1, 30, 77, 1200])
def test_block_size_does_not_change_the_static_choice(block):
  positions, values, a, d = _problem(5)
  expected = _dynamic(values, positions, a, d, 0.5)
  fn = tf.function(_static_fn(a, d, 200, block=block), jit_compile=True)
  new, source = fn(tf.constant(values), tf.constant(positions), tf.constant(0.5))
  np.testing.assert_array_equal(new.numpy(), expected[0])
  np.testing.assert_array_equal(source.numpy(), expected[1])


def test_static_embedding_ids_equal_dynamic():
  r = np.random.default_rng(3)
  positions, values, _, d = _problem(3)
  ids = tf.constant(r.integers(0, N_ROWS, 16))
  kept = tf.sort(tf.constant(positions))
  still = tf.ones([len(positions)], tf.bool)
  dynamic = U.rigl_grow(ids, d, N_ROWS, N_COLS, kept, 50, block_elements=200)
  static = tf.function(lambda: S.rigl_grow_static(ids, d, N_ROWS, N_COLS, kept, still, 50,
                                                  block_elements=200), jit_compile=True)()
  np.testing.assert_array_equal(static.numpy(), dynamic.numpy())


@pytest.mark.parametrize("size", [1200, 10**7], ids=["enumerate", "rejection"])
def test_static_set_compiles_and_equals_eager(size):
  r = np.random.default_rng(0)
  positions = np.sort(r.choice(size, 240, replace=False)).astype(np.int32)
  values = r.standard_normal(240).astype(np.float32)

  def fn(values, positions, fraction):
    grow = lambda still, k, n: S.set_grow_static(size, positions, still, k, n,
                                                 tf.constant([4, 5], tf.int64))
    return S.update_static(values, positions, fraction, grow, 100)

  args = (tf.constant(values), tf.constant(positions), tf.constant(0.3))
  eager = fn(*args)
  xla = tf.function(fn, jit_compile=True)(*args)
  for e, x in zip(eager, xla):
    np.testing.assert_array_equal(e.numpy(), x.numpy())
  new, source = (t.numpy() for t in eager)
  n_drop = int(U.drop_count(240, 0.3))
  assert np.all(np.diff(new) > 0) and new.max() < size
  assert np.sum(source < 0) <= n_drop and np.sum(source < 0) > 0
  np.testing.assert_array_equal(new[source >= 0], positions[source[source >= 0]])
  # The entries that stay are those of largest |value|.
  kept = set(positions[source[source >= 0]].tolist())
  largest = set(positions[np.argsort(-np.abs(values), kind="stable")[:240 - n_drop]].tolist())
  assert largest <= kept


def test_static_update_graph_has_no_dense_tensor():
  n_rows, n_cols, nnz = 600, 500, 3000

  def rigl(values, indices, a, d):
    grow = lambda still, k, n: S.rigl_grow_static(a, d, n_rows, n_cols, indices, still, k,
                                                  block_elements=5000)
    return S.update_static(values, indices, 0.3, grow, 900)

  def set_(values, indices):
    grow = lambda still, k, n: S.set_grow_static(n_rows * n_cols, indices, still, k, n,
                                                 tf.constant([1, 2], tf.int64))
    return S.update_static(values, indices, 0.3, grow, 900)

  specs = [tf.TensorSpec([nnz]), tf.TensorSpec([nnz], tf.int32)]
  for fn, extra in ((rigl, [tf.TensorSpec([16, n_rows]), tf.TensorSpec([16, n_cols])]),
                    (set_, [])):
    graph = tf.function(fn, jit_compile=True).get_concrete_function(*specs, *extra).graph
    assert largest_static_tensor(graph) < n_rows * n_cols // 10


@pytest.mark.parametrize("grow", ["rigl", "set"])
def test_updater_under_jit_compile_equals_eager(grow):
  """The scheduler-facing update picks the static path under XLA.

  RigL: the same result as the default (dynamic) eager update. SET draws at
  random with another sampler there, so it is compared with the static path
  run eagerly (``static_shapes = True``).
  """
  from keras_rigl._keras import keras  # pylint: disable=g-import-not-at-top
  from keras_rigl.layers import SparseDense
  from keras_rigl.layers.scheduling import CompressedUpdater

  def model():
    return keras.Sequential([keras.Input((20,)), SparseDense(30, 0.8, seed=2, name="a"),
                             SparseDense(7, 0.5, seed=3, name="b")])

  r = np.random.default_rng(0)
  data = [(tf.constant(r.integers(-2, 3, (8, n_in)).astype(np.float32)),
           tf.constant(r.integers(-2, 3, (8, n_out)).astype(np.float32)))
          for n_in, n_out in ((20, 30), (30, 7))]
  results = []
  for jit in (False, True):
    updater = CompressedUpdater(model(), seed=0, scheduler="RigLScheduler")
    updater.max_fraction = 0.5
    updater.static_shapes = grow == "set"
    for t in updater.targets:  # Many ties.
      t.weight.values.assign(tf.range(t.weight.nnz, dtype=tf.float32) % 5 - 2)
    fn = lambda: updater.apply(tf.constant(3, tf.int64), 0.4, grow, data)  # pylint: disable=cell-var-from-loop
    changed = tf.function(fn, jit_compile=True)() if jit else fn()
    results.append((float(changed), [(t.weight.positions().numpy(), t.weight.current_values().numpy())
                                     for t in updater.targets]))
  (c0, w0), (c1, w1) = results
  assert c0 == c1 > 0
  for (i0, v0), (i1, v1) in zip(w0, w1):
    assert np.all(np.diff(i0) > 0)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(v0, v1)
