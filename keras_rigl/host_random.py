"""TensorFlow's stateless random numbers in pure numpy (no TensorFlow needed).

`stateless_uniform(shape, seed, minval, maxval)` returns, bit for bit, what
``tf.random.stateless_uniform(shape, seed=tf.constant(seed, tf.int64),
minval=minval, maxval=maxval)`` returns on a CPU (float32 and float64), so that
mask positions and SET's random growth are the same numbers on every Keras
backend, also where TensorFlow is not installed. `stateless_normal` follows
``tf.random.stateless_normal`` (Box-Muller on the same words); TensorFlow
takes the logarithm, sine and cosine from the C library (glibc's ``logf`` and
``sincosf`` on Linux), this module from numpy in float64, rounded once, so
the values agree to within 3 units in the last place (float32: 87% of them
bit for bit, measured on 945k draws), allclose, not identical. Only random
`grow_init` values use it; masks never do.

How TensorFlow draws them (its "auto_select" algorithm on CPU: Philox-4x32-10):

- the int64 seed pair ``(s0, s1)`` becomes a key and a counter by one Philox
  block: the counter ``(lo(s0), hi(s0), lo(s1), hi(s1))`` under the fixed key
  ``(0x3EC8F720, 0x02461E29)`` gives ``(k0, k1, c2, c3)``; the generator then
  runs with key ``(k0, k1)`` from the counter ``(0, 0, c2, c3)``;
- output element ``i`` is word ``i % 4`` of the block at counter
  ``start + i // 4`` (float64: two words per element, two elements a block);
  a block's unused words are discarded;
- float32 in [0, 1): 23 random mantissa bits under exponent 0, minus 1;
  float64 likewise with 52 bits (20 from the first word, 32 from the second);
- uniform in [minval, maxval): ``u * (maxval - minval) + minval`` in the
  output dtype, two roundings, as TensorFlow's two ops.

Example:
>>> u = stateless_uniform((2, 3), (1, 2))
>>> u.shape, u.dtype.name, bool(((0 <= u) & (u < 1)).all())
((2, 3), 'float32', True)
>>> mask = random_mask((4, 5), 0.5, (0, 1))
>>> int(mask.sum())
10
"""

import numpy as np

from keras_rigl.distributions import num_zeros

_MASK32 = np.uint64(0xFFFFFFFF)
_MULTIPLIERS = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_KEY_STEPS = (np.uint32(0x9E3779B9), np.uint32(0xBB67AE85))
_SCRAMBLE_KEY = (0x3EC8F720, 0x02461E29)


def philox4x32(counters, key):
  """Philox-4x32-10 of each counter under one key.

  Args:
    counters: uint32 array [n, 4] (word 0 is the least significant).
    key: two ints (uint32).

  Returns:
    uint32 array [n, 4], the generator's four output words per counter.

  Example:
  >>> [hex(w) for w in philox4x32(np.zeros((1, 4), np.uint32), (0, 0))[0]]  # Random123's
  ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
  """
  c = [np.asarray(counters[:, j], np.uint32) for j in range(4)]
  k0, k1 = np.uint32(key[0]), np.uint32(key[1])
  with np.errstate(over="ignore"):
    for round_ in range(10):
      if round_:
        k0, k1 = k0 + _KEY_STEPS[0], k1 + _KEY_STEPS[1]
      p0 = c[0].astype(np.uint64) * _MULTIPLIERS[0]
      p1 = c[2].astype(np.uint64) * _MULTIPLIERS[1]
      hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), (p0 & _MASK32).astype(np.uint32)
      hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), (p1 & _MASK32).astype(np.uint32)
      c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
  return np.stack(c, axis=1)


def key_and_counter(seed):
  """TensorFlow's key (2 words) and start counter (4 words) for an int64 seed pair."""
  words = []
  for s in seed:
    s = int(s) & 0xFFFFFFFFFFFFFFFF  # int64 -> uint64, as TensorFlow casts it.
    words += [s & 0xFFFFFFFF, s >> 32]
  mix = philox4x32(np.asarray([words], np.uint32), _SCRAMBLE_KEY)[0]
  return (int(mix[0]), int(mix[1])), (0, 0, int(mix[2]), int(mix[3]))


def random_words(blocks, seed):
  """The first `blocks` Philox blocks of a seed's stream: uint32 [blocks, 4]."""
  key, start = key_and_counter(seed)
  index = np.arange(blocks, dtype=np.uint64)
  # start[0] = start[1] = 0, so the block index fills words 0 and 1 without carry.
  counters = np.empty((blocks, 4), np.uint32)
  counters[:, 0] = (index & _MASK32).astype(np.uint32)
  counters[:, 1] = (index >> np.uint64(32)).astype(np.uint32)
  counters[:, 2], counters[:, 3] = start[2], start[3]
  return philox4x32(counters, key)


def _unit_float32(words):
  bits = (words & np.uint32(0x7FFFFF)) | np.uint32(127 << 23)
  return bits.view(np.float32) - np.float32(1.0)


def _unit_float64(high, low):
  bits = ((high & np.uint32(0xFFFFF)).astype(np.uint64) << np.uint64(32)) | low.astype(np.uint64)
  bits |= np.uint64(1023 << 52)
  return bits.view(np.float64) - 1.0


def _shape(shape):
  shape = tuple(int(d) for d in shape)
  return shape, int(np.prod(shape, dtype=np.int64))


def _dtype(dtype):
  name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
  if name not in ("float32", "float64"):
    raise ValueError(f"host random numbers in float32 or float64, not {dtype!r}.")
  return np.dtype(name)


def stateless_uniform(shape, seed, minval=0.0, maxval=1.0, dtype="float32"):
  """``tf.random.stateless_uniform`` (float32/float64, CPU) in numpy, bit for bit."""
  shape, size = _shape(shape)
  dtype = _dtype(dtype)
  if dtype == np.float32:
    unit = _unit_float32(random_words(-(-size // 4), seed).reshape(-1)[:size])
  else:
    words = random_words(-(-size // 2), seed).reshape(-1, 2)[:size]
    unit = _unit_float64(words[:, 0], words[:, 1])
  low, high = dtype.type(minval), dtype.type(maxval)
  return (unit * (high - low) + low).astype(dtype).reshape(shape)


def stateless_normal(shape, seed, dtype="float32"):
  """``tf.random.stateless_normal`` (Box-Muller on Philox) in numpy.

  The same uniform words and the same transform as TensorFlow; the
  transcendental functions are numpy's in float64, rounded once, so values
  agree with TensorFlow's to a few units in the last place (allclose),
  not necessarily bit for bit.
  """
  shape, size = _shape(shape)
  dtype = _dtype(dtype)
  if dtype == np.float32:
    words = random_words(-(-size // 4), seed).reshape(-1, 2)
    u1 = _unit_float32(words[:, 0])
    u1 = np.maximum(u1, np.float32(1e-7))
    angle = (2.0 * np.pi * _unit_float32(words[:, 1]).astype(np.float64)).astype(np.float32)
    radius = np.sqrt(-2.0 * np.log(u1.astype(np.float64))).astype(np.float32)
    angle = angle.astype(np.float64)
    pairs = np.stack([np.sin(angle).astype(np.float32), np.cos(angle).astype(np.float32)], 1)
    values = (pairs * radius[:, None]).reshape(-1)[:size]
  else:
    words = random_words(-(-size // 2), seed).reshape(-1, 4)
    u1 = np.maximum(_unit_float64(words[:, 0], words[:, 1]), 1e-7)
    angle = 2 * np.pi * _unit_float64(words[:, 2], words[:, 3])
    radius = np.sqrt(-2.0 * np.log(u1))
    values = (np.stack([np.sin(angle), np.cos(angle)], 1) * radius[:, None]).reshape(-1)[:size]
  # TensorFlow then computes `rnd * stddev + mean` with stddev 1 and mean 0.
  values = values.astype(dtype) * dtype.type(1.0) + dtype.type(0.0)
  return values.reshape(shape)


def random_mask(shape, sparsity, seed, dtype="float32"):
  """`keras_rigl.masks.random_mask` in numpy: the same mask, bit for bit.

  ``floor(sparsity * N)`` zeros; the ones are the ``N - floor(sparsity * N)``
  largest stateless uniform scores, ties to the lower index (as
  ``tf.math.top_k``).
  """
  shape, size = _shape(shape)
  n_ones = size - num_zeros(size, sparsity)
  scores = stateless_uniform([size], seed)
  keep = np.argsort(-scores, kind="stable")[:n_ones]
  flat = np.zeros([size], np.float32)
  flat[keep] = 1.0
  try:
    dtype = np.dtype(dtype)
  except TypeError:
    dtype = np.dtype("float32")  # bfloat16 & co: Keras casts the 0/1 values.
  return flat.astype(dtype).reshape(shape)
