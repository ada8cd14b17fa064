"""Positions of the active connections of a compressed layer, in O(nnz) memory.

A compressed weight of dense shape ``[n_in, n_out]`` stores its active
connections as flat row-major positions ``i * n_out + j`` (int32, or int64
when the dense size reaches 2**31), in any order. These helpers draw distinct
random positions and test membership without ever making a tensor of the
dense size. Plain TensorFlow; nothing here knows about Keras.
"""

import numpy as np
from keras_rigl.backend import tf

from keras_rigl.distributions import num_zeros

# Below this many candidates per wanted position, enumerate all of [0, N):
# then N <= _ENUMERATE_RATIO * (count + excluded), still O(nnz).
_ENUMERATE_RATIO = 4
_MAX_ROUNDS = 64


def index_dtype(size):
  """int32 positions while the dense size fits, int64 beyond 2**31 - 1.

  Example:
  >>> index_dtype(2**31).name
  'int64'
  """
  return tf.int32 if size < 2**31 else tf.int64


def active_count(size, sparsity):
  """nnz = N - floor(s * N): exactly the ones of the masked storage's mask.

  Example:
  >>> active_count(100, 0.9)
  10
  """
  return int(size) - num_zeros(int(size), sparsity)


def is_member(values, sorted_set):
  """Boolean, True where `values` occur in the ascending 1-D `sorted_set`.

  Example:
  >>> is_member([1, 5, 7], [2, 5, 9]).numpy().tolist()
  [False, True, False]
  """
  values = tf.cast(values, tf.int64)
  sorted_set = tf.cast(sorted_set, tf.int64)
  where = tf.searchsorted(sorted_set, values, side="left", out_type=tf.int64)
  # A sentinel (-1, never a position) at the end keeps the gather in range.
  found = tf.gather(tf.concat([sorted_set, [-1]], 0), where)
  return tf.equal(found, values)


def _first_unique(values):
  """Distinct entries of 1-D `values`, in order of first occurrence."""
  unique, _ = tf.unique(values)
  return unique


_INIT_CHUNK = 1 << 22  # Positions per chunk of the initial draw.
_HYPERGEOMETRIC_LIMIT = 10**9


def initial_positions(size, count, seed):
  """`count` distinct random positions in [0, size), ascending (int64 numpy).

  For a layer's initial connections, drawn eagerly at build time: an exact
  multivariate hypergeometric draw says how many positions fall in each
  chunk of 2**22 positions, then each chunk draws its own. Uniform over all
  subsets of size `count`, and the memory is the result plus one chunk,
  never O(size). Deterministic in (seed, size, count), so every replica and
  worker draws the same set. From 10**9 positions on (numpy's limit for the
  exact split) it uses the TensorFlow rejection sampler `sample_positions`,
  also O(count) but with a larger constant.

  Example:
  >>> p = initial_positions(10**12, 4, seed=(0, 1))
  >>> len(set(p.tolist())), bool(p.max() < 10**12)
  (4, True)
  """
  size, count = int(size), int(count)
  if size >= _HYPERGEOMETRIC_LIMIT:  # numpy's exact draw stops there.
    return sample_positions(size, count, seed).numpy()
  rng = np.random.default_rng([int(s) for s in seed])
  starts = np.arange(0, size, _INIT_CHUNK, dtype=np.int64)
  lengths = np.minimum(_INIT_CHUNK, size - starts)
  per_chunk = rng.multivariate_hypergeometric(lengths, count, method="marginals")
  out = np.empty([count], np.int64)
  at = 0
  for start, length, n in zip(starts, lengths, per_chunk):
    if n:
      out[at:at + n] = start + np.sort(rng.choice(int(length), int(n), replace=False))
      at += n
  return out


def sample_positions(size, count, seed, exclude=None, bound=None):
  """`count` distinct random positions in [0, size), none of them in `exclude`.

  Stateless (same seed, same positions on every replica and worker) and
  O(count + len(exclude)) in memory: random candidates are drawn in rounds,
  duplicates and excluded ones rejected, until enough are left. When the
  wanted and excluded positions make up a large part of [0, size), the whole
  range is enumerated instead (then size is itself O(count + excluded)).

  Args:
    size: the dense size N (a Python int).
    count: how many positions (Python int or scalar int tensor).
    seed: a pair of ints / int64 tensor of shape [2] for the stateless RNG.
    exclude: optional 1-D ascending int tensor of forbidden positions.
    bound: a Python int >= count + len(exclude); required when either is a
      tensor. It picks the method statically, so no tensor of the dense size
      ever appears in a graph unless ``size <= 4 * bound``.

  Returns:
    int64 tensor of shape [count], ascending.

  Example:
  >>> p = sample_positions(10**12, 5, seed=(0, 1))
  >>> int(tf.size(tf.unique(p)[0]))
  5
  """
  size = int(size)
  if bound is None:
    if exclude is not None or not isinstance(count, int):
      raise ValueError("sample_positions needs `bound` (a Python int >= count + "
                       "len(exclude)) when count or exclude are tensors.")
    bound = count
  count = tf.cast(count, tf.int64)
  if exclude is None:
    exclude = tf.zeros([0], tf.int64)
  exclude = tf.cast(exclude, tf.int64)
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)

  def enumerate_all():
    everything = tf.range(size, dtype=tf.int64)
    free = tf.boolean_mask(everything, tf.logical_not(is_member(everything, exclude)))
    scores = tf.random.stateless_uniform(tf.shape(free), seed=seed)
    _, pick = tf.math.top_k(scores, k=tf.cast(count, tf.int32), sorted=False)
    return tf.sort(tf.gather(free, pick))

  def rejection():
    # Free positions are >= 3/4 of [0, size): each round keeps most draws.
    batch = count + count // 2 + 16

    def body(round_, found):
      draws = tf.random.stateless_uniform(
          [batch], seed=seed + tf.stack([round_ * 7919, round_]),
          minval=0, maxval=size, dtype=tf.int64)
      draws = tf.boolean_mask(draws, tf.logical_not(is_member(draws, exclude)))
      return round_ + 1, _first_unique(tf.concat([found, draws], 0))

    def more(round_, found):
      return tf.logical_and(tf.shape(found, out_type=tf.int64)[0] < count,
                            round_ < _MAX_ROUNDS)

    _, found = tf.while_loop(
        more, body, (tf.constant(0, tf.int64), tf.zeros([0], tf.int64)),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None])))
    tf.debugging.assert_greater_equal(
        tf.shape(found, out_type=tf.int64)[0], count,
        message="sample_positions: too few distinct positions were drawn")
    return tf.sort(found[:count])

  if _ENUMERATE_RATIO * int(bound) >= size:
    return enumerate_all()
  return rejection()
