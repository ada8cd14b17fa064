"""``x @ W`` for a sparse kernel stored as ``values`` + flat ``indices``, in plain TF.

Storage: a sparse ``[n_in, n_out]`` kernel is ``values`` (float ``[nnz]``) and
``indices`` (int32 ``[nnz]``, int64 when ``n_in * n_out >= 2**31``): the flat
row-major positions ``i * n_out + j``, in any order, without duplicates.
Nothing of size ``n_in * n_out`` is created here, except by ``method="dense"``,
which is refused above `DENSE_LIMIT` elements.

Methods (forward, gradient w.r.t. ``x``; the gradient w.r.t. ``values`` is
always the sampled product ``sum_b x[b, i_k] * dy[b, j_k]``, computed by
`sampled_matmul` in chunks of rows of ``[nnz, batch]``, never as a dense
``[n_in, n_out]`` gradient):

  ``"csr"``                  ``tf.raw_ops.SparseMatrixMatMul`` on a CSR matrix
                             built once per call (row-sorted: one ``argsort``
                             unless `sort_order` is passed in ``order`` or
                             ``indices_sorted=True`` says they are); the
                             gradient w.r.t. ``x`` rebuilds it (O(nnz)).
  ``"sparse_dense_matmul"``  ``tf.sparse.sparse_dense_matmul`` on ``W^T``
                             (any index order); the gradient w.r.t. ``x`` uses
                             ``adjoint_a``.
  ``"gather"``               gather the active inputs, scale by ``values``,
                             ``unsorted_segment_sum`` into the outputs. The
                             only sparse formulation that XLA compiles. With a
                             batch of 1 it is the inference path: one fused XLA
                             pass over the entries. With larger batches it
                             holds ``[nnz, batch]`` gathers and, outside XLA,
                             TF's CPU segment sum is slow: auto avoids it there.
  ``"embedding_lookup_sparse"`` ``tf.nn.embedding_lookup_sparse`` (gather +
                             sorted ``segment_sum``) with the kernel's columns
                             as bags; needs a sort by column every call.
  ``"dense"``                scatter ``values`` into a dense kernel and use
                             ``tf.matmul``; only for kernels of at most
                             `DENSE_LIMIT` elements (16 MiB of float32).
  ``"auto"``                 `choose_method`: a rule read off the tables of
                             ``benchmarks/sparse_kernels.py``
                             (``benchmarks/results/sparse_kernels.md``).

Integer index arithmetic, the batch-1 path and the dense fallback's scatter run
as small ``jit_compile`` functions even outside XLA: fused, they were 2-10x
faster on CPU than TF's element-wise integer kernels.

Under ``tf.function(jit_compile=True)`` only ``"gather"`` and ``"dense"``
compile (the CSR, ``SparseTensorDenseMatMul`` and sorted segment ops have no XLA
kernel); ``"auto"`` detects an XLA context and picks one of them, and an
explicit non-XLA method raises a ValueError there.
"""

import functools
import operator

from keras_rigl.backend import tf
from keras_rigl.custom_gradient import custom_gradient

# Largest kernel (n_in * n_out elements) that method="dense" may scatter into a
# dense tensor: 2**22 float32 = 16 MiB, below every layer size the compressed
# storage is meant for.
DENSE_LIMIT = 2**22

# sampled_matmul materialises two [chunk, batch] gathers at a time; this many
# elements per chunk (4 MiB of float32) kept them cache-sized and was the
# fastest of 2**20..2**24 on a 2-core CPU (4096^2 at 98%, batch 256).
SAMPLED_CHUNK_ELEMENTS = 2**20

# `order` value meaning "indices are already ascending" (sparse_matmul's
# indices_sorted=True): csr then neither sorts nor permutes.
SORTED = "sorted"

# The values gradient uses blocked dense products (`blocked_sampled_matmul`)
# above this density with a batch of at least BLOCKED_MIN_BATCH, for ascending
# indices; one block holds at most BLOCK_ELEMENTS products (8 MiB of float32).
BLOCKED_DENSITY = 0.03
BLOCKED_MIN_BATCH = 32
BLOCK_ELEMENTS = 2**21

METHODS = ("csr", "sparse_dense_matmul", "gather", "embedding_lookup_sparse", "dense")
XLA_METHODS = ("gather", "dense")


def index_dtype(n_in, n_out):
  """The dtype of flat indices for an ``[n_in, n_out]`` kernel.

  int32 unless ``n_in * n_out >= 2**31``, where positions no longer fit.

  Example:
  >>> from keras_rigl.layers import kernels
  >>> kernels.index_dtype(1024, 1024).name, kernels.index_dtype(65536, 65536).name
  ('int32', 'int64')
  """
  return tf.int64 if int(n_in) * int(n_out) >= 2**31 else tf.int32


def sort_order(indices):
  """The permutation that sorts flat ``indices`` (row-major order).

  ``"csr"`` needs its entries sorted by row and sorts them on every call
  (``argsort``: about a third of a 4096^2 98%-sparse CSR step on CPU). A layer
  whose indices change only at mask updates can compute this once per update,
  keep it, and pass it as ``sparse_matmul(..., order=...)``.

  Example:
  >>> import tensorflow as tf
  >>> from keras_rigl.layers import kernels
  >>> kernels.sort_order(tf.constant([7, 2, 5])).numpy().tolist()
  [1, 2, 0]
  """
  return tf.argsort(indices, stable=True)


def in_xla_context():
  """True while tracing inside ``tf.function(jit_compile=True)`` (or a TPU/XLA rewrite)."""
  if tf.executing_eagerly():
    return False
  try:
    from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
  except (ImportError, AttributeError):  # internal API moved: assume no XLA
    return False


def _device_type(x):
  """"GPU" or "CPU": where ``x``'s ops will run, as far as the graph tells."""
  dev = (getattr(x, "device", "") or "").upper()
  if "GPU" in dev:
    return "GPU"
  if "CPU" in dev:
    return "CPU"
  return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"


def choose_method(n_in, n_out, nnz, batch, device="CPU", xla=False, dtype="float32",
                  ordered=False, allow_dense=True):
  """The method ``method="auto"`` uses for one call.

  The rule, read off ``benchmarks/sparse_kernels.py`` on a 2-core CPU
  (tables and commands in ``benchmarks/results/sparse_kernels.md``):

  * under XLA: ``"dense"`` for a kernel of at most `DENSE_LIMIT` elements
    with density above 1%, else ``"gather"`` (the only ones that compile);
  * batch 1 (inference): ``"gather"``, one fused XLA pass over the entries
    (sparse_dense_matmul was 1.3-2x and csr 10-30x slower there);
  * a kernel of at most `DENSE_LIMIT` elements with density above 2.1%
    (sparsity below 98%, with nnz rounding): ``"dense"`` (1024^2, batch 32 and
    256: every sparse method lost to the dense matmul below 98%);
  * batch below 16, or below 64 without a cached ``order``:
    ``"sparse_dense_matmul"`` (4096^2 at 98-99%, batch 8-32: 1.3-2x faster
    than csr, whose per-call argsort dominates at small batches);
  * otherwise (and an unknown batch): ``"csr"`` (batch 64-256: 1.5-3x faster
    than sparse_dense_matmul).

  GPU: the same rule; not yet measured on a GPU (``--device=gpu`` rows of the
  benchmark will tell). ``dtype`` is accepted for rules that differ by
  precision; half precision runs csr / sparse_dense_matmul in float32.

  Args:
    n_in, n_out: the kernel's shape.
    nnz: number of stored entries.
    batch: rows of ``x`` after flattening leading dims (None if unknown).
    device: "CPU" or "GPU".
    xla: whether the call is compiled by XLA.
    dtype: the compute dtype.
    ordered: whether a precomputed `sort_order` is passed (cheap csr).
    allow_dense: False never picks ``"dense"`` (compressed layers promise
      that no tensor of the dense kernel's size exists).

  Example:
  >>> from keras_rigl.layers import kernels
  >>> kernels.choose_method(4096, 4096, 335545, 256)
  'csr'
  >>> kernels.choose_method(4096, 4096, 335545, 256, xla=True)
  'gather'
  >>> kernels.choose_method(4096, 4096, 335545, 1)
  'gather'
  """
  del device, dtype  # one rule for now; see the docstring
  size = int(n_in) * int(n_out)
  density = nnz / size if size else 1.0
  small = size <= DENSE_LIMIT and allow_dense
  if xla:
    return "dense" if small and density > 0.01 else "gather"
  if batch == 1:
    return "gather"
  if small and density > 0.021:
    return "dense"
  if batch is not None and (batch < 16 or (batch < 64 and not ordered)):
    return "sparse_dense_matmul"
  return "csr"


def _check_int(name, value):
  try:
    v = operator.index(value)  # Python or numpy int, not float
  except TypeError:
    v = None
  if v is None or isinstance(value, bool) or v <= 0:
    raise ValueError(f"sparse_matmul: `{name}` must be a positive int, got {value!r}.")
  return v


def sparse_matmul(x, values, indices, n_in, n_out, method="auto", order=None,
                  indices_sorted=False):
  """``x @ W`` for the sparse ``[n_in, n_out]`` kernel ``W`` given by ``values`` at ``indices``.

  Differentiable w.r.t. ``x`` and ``values``; the gradient w.r.t. ``values`` is
  computed without a dense ``[n_in, n_out]`` tensor (see `sampled_matmul`).

  Args:
    x: float tensor ``[..., n_in]``; leading dims are flattened and restored.
    values: float tensor ``[nnz]``, same dtype as ``x``.
    indices: int32/int64 tensor ``[nnz]`` of distinct flat positions
      ``i * n_out + j``, in any order (int64 needed once ``n_in * n_out >= 2**31``).
    n_in, n_out: the kernel's shape (Python ints).
    method: one of `METHODS` or ``"auto"`` (see the module docstring).
    order: optional ``sort_order(indices)``, reused by ``"csr"`` instead of
      sorting on every call. Must match ``indices``; it is not checked.
    indices_sorted: True promises ``indices`` ascending (what compressed
      layers keep): no method sorts or permutes anything per call. Not
      checked.

  Returns:
    ``[..., n_out]`` tensor of ``x``'s dtype.

  Example:
  >>> import tensorflow as tf
  >>> from keras_rigl.layers import kernels
  >>> x = tf.constant([[1.0, 2.0, 3.0]])
  >>> values, indices = tf.constant([10.0, 1.0]), tf.constant([5, 0])  # W[2,1]=10, W[0,0]=1
  >>> kernels.sparse_matmul(x, values, indices, 3, 2).numpy().tolist()
  [[1.0, 30.0]]
  """
  n_in = _check_int("n_in", n_in)
  n_out = _check_int("n_out", n_out)
  if method != "auto" and method not in METHODS:
    raise ValueError(f"sparse_matmul: unknown `method` {method!r}; use 'auto' or one of {METHODS}.")
  x = tf.convert_to_tensor(x)
  values = tf.convert_to_tensor(values)
  indices = tf.convert_to_tensor(indices)
  if not x.dtype.is_floating:
    raise TypeError(f"sparse_matmul: `x` must be a float tensor, got {x.dtype.name}.")
  if values.dtype != x.dtype:
    raise TypeError(f"sparse_matmul: `values` ({values.dtype.name}) and `x` ({x.dtype.name}) must "
                    "have the same dtype; cast one of them.")
  if indices.dtype not in (tf.int32, tf.int64):
    raise TypeError(f"sparse_matmul: `indices` must be int32 or int64, got {indices.dtype.name}.")
  if indices.dtype == tf.int32 and n_in * n_out >= 2**31:
    raise TypeError(f"sparse_matmul: a [{n_in}, {n_out}] kernel has {n_in * n_out} >= 2**31 "
                    "positions; `indices` must be int64.")
  if values.shape.rank != 1 or indices.shape.rank != 1:
    raise ValueError("sparse_matmul: `values` and `indices` must be 1-D [nnz], got shapes "
                     f"{values.shape} and {indices.shape}.")
  nnz = values.shape[0]
  if nnz is not None and indices.shape[0] is not None and nnz != indices.shape[0]:
    raise ValueError(f"sparse_matmul: `values` has {nnz} entries but `indices` has {indices.shape[0]}.")
  if nnz is None:
    nnz = indices.shape[0]
  if x.shape.rank is not None and (x.shape.rank == 0 or x.shape[-1] not in (None, n_in)):
    raise ValueError(f"sparse_matmul: `x` must have shape [..., n_in={n_in}], got {x.shape}.")
  if nnz is not None and nnz > n_in * n_out:
    raise ValueError(f"sparse_matmul: {nnz} entries cannot fit a [{n_in}, {n_out}] kernel.")

  if indices_sorted:
    order = SORTED
  xla = in_xla_context()
  x2 = tf.reshape(x, [-1, n_in])
  batch = x2.shape[0]
  if method == "auto":
    method = choose_method(n_in, n_out, nnz if nnz is not None else n_in * n_out, batch,
                           _device_type(x), xla, x.dtype, ordered=order is not None)
  elif xla and method not in XLA_METHODS:
    raise ValueError(f"sparse_matmul: method={method!r} has no XLA kernel and cannot run under "
                     f"jit_compile=True; use method='auto' or one of {XLA_METHODS}.")
  if method == "dense" and n_in * n_out > DENSE_LIMIT:
    raise ValueError(f"sparse_matmul: method='dense' would build a [{n_in}, {n_out}] kernel "
                     f"({n_in * n_out} elements > DENSE_LIMIT={DENSE_LIMIT}); use a sparse method "
                     "or 'auto'.")

  y = _IMPLS[method](x2, values, indices, n_in, n_out, order)
  out_shape = tf.concat([tf.shape(x)[:-1], [n_out]], 0)
  y = tf.reshape(y, out_shape)
  if x.shape.rank is not None:
    y.set_shape(x.shape[:-1].concatenate([n_out]))
  return y


# --- the gradient w.r.t. values -------------------------------------------------


def sampled_matmul(x, dy, rows, cols, chunk_elements=SAMPLED_CHUNK_ELEMENTS):
  """``(x^T @ dy)[rows[k], cols[k]]`` for every k, without the dense product.

  This is the gradient of ``x @ W`` w.r.t. the stored values: for each entry,
  ``sum_b x[b, rows[k]] * dy[b, cols[k]]``. Entries are processed in chunks so
  that at most ``2 * chunk_elements`` gathered elements exist at a time (a
  ``tf.map_fn`` loop, which XLA also compiles).

  Args:
    x: ``[batch, n_in]``.
    dy: ``[batch, n_out]``.
    rows, cols: int ``[nnz]``.
    chunk_elements: bound on ``chunk * batch``.

  Example:
  >>> import tensorflow as tf
  >>> from keras_rigl.layers import kernels
  >>> x, dy = tf.constant([[1.0, 2.0]]), tf.constant([[3.0, 4.0, 5.0]])
  >>> kernels.sampled_matmul(x, dy, tf.constant([1, 0]), tf.constant([2, 0])).numpy().tolist()
  [10.0, 3.0]
  """
  nnz = rows.shape[0]
  batch = x.shape[0]
  if batch == 1:
    return _vector_sampled(x[0], dy[0], rows, cols)
  xt = tf.transpose(x)  # [n_in, batch]: gathered rows are contiguous
  dyt = tf.transpose(dy)
  chunk = max(1024, chunk_elements // batch) if batch else 4096

  def block(r, c):
    return tf.reduce_sum(tf.gather(xt, r) * tf.gather(dyt, c), axis=1)

  if nnz is None or nnz <= chunk:
    return block(rows, cols)
  n_chunks = -(-nnz // chunk)
  pad = n_chunks * chunk - nnz  # padded entries read position 0 and are cut off
  r = tf.reshape(tf.pad(rows, [[0, pad]]), [n_chunks, chunk])
  c = tf.reshape(tf.pad(cols, [[0, pad]]), [n_chunks, chunk])
  out = tf.map_fn(lambda rc: block(rc[0], rc[1]), (r, c), fn_output_signature=x.dtype)
  return tf.reshape(out, [-1])[:nnz]


def blocked_sampled_matmul(x, dy, indices, n_in, n_out, block_elements=BLOCK_ELEMENTS):
  """`sampled_matmul` for ascending ``indices``: dense products one block of rows at a time.

  For each block of kernel rows, ``x[:, rows]^T @ dy`` (at most
  `block_elements` elements, 8 MiB by default) is computed by the dense GEMM and
  the block's stored positions (a contiguous run, since they are ascending)
  are gathered from it. The work is the dense weight gradient's, done at GEMM
  speed; `sampled_matmul`'s gathers move ``nnz x batch`` elements instead, so
  this wins at high densities and large batches (see `_values_grad`).
  Memory: one block, never the dense gradient. Not for XLA (dynamic runs).

  Example:
  >>> import tensorflow as tf
  >>> from keras_rigl.layers import kernels
  >>> x, dy = tf.constant([[1.0, 2.0]]), tf.constant([[3.0, 4.0, 5.0]])
  >>> kernels.blocked_sampled_matmul(x, dy, tf.constant([0, 5]), 2, 3).numpy().tolist()
  [3.0, 10.0]
  """
  rows = max(1, min(n_in, block_elements // n_out))
  n_blocks = -(-n_in // rows)
  xt = tf.transpose(x)
  starts = tf.range(n_blocks + 1, dtype=indices.dtype) * tf.cast(rows * n_out, indices.dtype)
  bounds = tf.searchsorted(indices, starts, side="left", out_type=tf.int32)
  pieces = tf.TensorArray(x.dtype, size=n_blocks, infer_shape=False)

  def body(b, pieces):
    g = tf.reshape(tf.matmul(xt[b * rows:(b + 1) * rows], dy), [-1])
    local = indices[bounds[b]:bounds[b + 1]] - tf.cast(b * rows * n_out, indices.dtype)
    return b + 1, pieces.write(b, tf.gather(g, local))

  _, pieces = tf.while_loop(lambda b, _: b < n_blocks, body, (tf.constant(0), pieces),
                            parallel_iterations=1)
  return tf.reshape(pieces.concat(), [-1])


def _values_grad(indices, rows_cols, n_in, n_out, order):
  """The gradient w.r.t. the values: blocked dense products or sampled gathers.

  Rule (4096^2, batch 256, 2-core CPU under load 12, medians of 5; see
  docs/performance.md): blocked GEMMs were 2x faster than the gathers at 95%
  sparsity and 2.7x slower at 98%: they are used for ascending indices above
  `BLOCKED_DENSITY` with a batch of at least `BLOCKED_MIN_BATCH` (or unknown),
  outside XLA.
  """

  def grad(x, dy):
    batch, nnz = x.shape[0], indices.shape[0]
    if (isinstance(order, str) and not in_xla_context() and nnz is not None
        and nnz > BLOCKED_DENSITY * n_in * n_out
        and (batch is None or batch >= BLOCKED_MIN_BATCH)):
      return blocked_sampled_matmul(x, dy, indices, n_in, n_out)
    return sampled_matmul(x, dy, *rows_cols())

  return grad


# Integer index arithmetic (div/mod, casts, stacking) runs as small XLA
# functions: on CPU, TF's element-wise int32 kernels took 6-18 ms per 1.7M
# entries where the fused XLA version took 1.6 ms (4096^2 at 90%). Called inside
# an outer jit_compile function they are simply inlined.
def _xla(function):
  """``tf.function(jit_compile=True, reduce_retracing=True)``, made on first call.

  (Not at import: TensorFlow is imported only where it is used.)
  """
  compiled = []

  @functools.wraps(function)
  def call(*args, **kwargs):
    if not compiled:
      compiled.append(tf.function(function, jit_compile=True, reduce_retracing=True))
    return compiled[0](*args, **kwargs)

  return call


@_xla
def _split_xla(indices, n_out):
  return indices // n_out, indices % n_out


def _split(indices, n_out):
  # n_out stays a Python int: XLA then compiles the division by a constant
  # into a multiply and shift (2x faster than a division by a runtime value).
  return _split_xla(indices, n_out)


@_xla
def _transposed_positions(rows, cols):
  """[nnz, 2] int64 (col, row) positions: W^T as a SparseTensor."""
  return tf.stack([tf.cast(cols, tf.int64), tf.cast(rows, tf.int64)], axis=1)


@_xla
def _flat_to_positions(indices, n_out):
  """[nnz, 2] int64 (row, col) positions from flat ones, in their order (one fused pass)."""
  indices = tf.cast(indices, tf.int64)
  return tf.stack([indices // n_out, indices % n_out], axis=1)


@_xla
def _sorted_positions(rows, cols, order):
  """[nnz, 2] int64 (row, col) positions in `order`: W as a row-sorted SparseTensor."""
  return tf.stack([tf.cast(tf.gather(rows, order), tf.int64),
                   tf.cast(tf.gather(cols, order), tf.int64)], axis=1)


@_xla
def _vector_forward(x, values, src, dst, n_dst):
  """Batch 1: y[dst[k]] += x[src[k]] * values[k], fused by XLA into one pass."""
  return tf.math.unsorted_segment_sum(tf.gather(x, src) * values, dst, n_dst)


@_xla
def _vector_sampled(x, dy, rows, cols):
  return tf.gather(x, rows) * tf.gather(dy, cols)


def _with_gradient(forward, backward_x, x, values, rows, cols, values_grad=None):
  """Wrap forward(x, values) with backward_x(dy, values) and the sampled values gradient."""
  values_grad = values_grad or (lambda x, dy: sampled_matmul(x, dy, rows, cols))

  @custom_gradient
  def f(x, values):
    y = forward(x, values)

    def grad(dy):
      return backward_x(dy, values), values_grad(x, dy)

    return y, grad

  return f(x, values)


def _empty_batch(x, values, n_out):
  # Zero rows: no kernel runs; keep x and values connected for gradients.
  return tf.zeros([0, n_out], x.dtype) + 0 * (tf.reduce_sum(x) + tf.reduce_sum(values))


# --- methods ---------------------------------------------------------------------


def _gather(x, values, indices, n_in, n_out, order):
  if x.shape[0] == 1:
    return _gather_vector(x, values, indices, n_in, n_out)
  rows, cols = _split(indices, n_out)

  def fwd(x, v):
    g = tf.gather(tf.transpose(x), rows) * v[:, None]
    return tf.transpose(tf.math.unsorted_segment_sum(g, cols, n_out))

  def bwd(dy, v):
    g = tf.gather(tf.transpose(dy), cols) * v[:, None]
    return tf.transpose(tf.math.unsorted_segment_sum(g, rows, n_in))

  return _with_gradient(fwd, bwd, x, values, rows, cols,
                        _values_grad(indices, lambda: (rows, cols), n_in, n_out, order))


@_xla
def _vector_forward_flat(x, values, indices, n_out, n_dst):
  """Batch-1 forward straight from flat indices: split, gather, scale, sum in one XLA pass.

  n_out is a Python int (a compile-time constant), see `_split`.
  """
  return tf.math.unsorted_segment_sum(tf.gather(x, indices // n_out) * values, indices % n_out,
                                      n_dst)


def _gather_vector(x, values, indices, n_in, n_out):
  """The batch-1 (inference) path: no transposes, no [nnz, batch] intermediates."""

  @custom_gradient
  def f(x, values):
    y = _vector_forward_flat(x[0], values, indices, n_out, n_out)[None]

    def grad(dy):
      rows, cols = _split(indices, n_out)  # only when training
      dx = _vector_forward(dy[0], values, cols, rows, n_in)[None]
      return dx, _vector_sampled(x[0], dy[0], rows, cols)

    return y, grad

  return f(x, values)


def _half_to_float(fn):
  """Run a float32/float64-only op in float32 for half-precision inputs."""

  def wrapped(x, values, indices, n_in, n_out, order):
    if x.dtype in (tf.float32, tf.float64):
      return fn(x, values, indices, n_in, n_out, order)
    y = fn(tf.cast(x, tf.float32), tf.cast(values, tf.float32), indices, n_in, n_out, order)
    return tf.cast(y, x.dtype)

  return wrapped


@_half_to_float
def _sparse_dense_matmul(x, values, indices, n_in, n_out, order):
  if x.shape[0] == 0:
    return _empty_batch(x, values, n_out)
  rows, cols = _split(indices, n_out)
  wt_positions = _transposed_positions(rows, cols)  # W^T: [n_out, n_in], any order

  def fwd(x, v):
    wt = tf.SparseTensor(wt_positions, v, [n_out, n_in])
    return tf.transpose(tf.sparse.sparse_dense_matmul(wt, x, adjoint_b=True))

  def bwd(dy, v):
    wt = tf.SparseTensor(wt_positions, v, [n_out, n_in])
    return tf.transpose(tf.sparse.sparse_dense_matmul(wt, dy, adjoint_a=True, adjoint_b=True))

  return _with_gradient(fwd, bwd, x, values, rows, cols,
                        _values_grad(indices, lambda: (rows, cols), n_in, n_out, order))


@_half_to_float
def _csr(x, values, indices, n_in, n_out, order):
  if x.shape[0] == 0:
    return _empty_batch(x, values, n_out)
  shape = tf.constant([n_in, n_out], tf.int64)
  if isinstance(order, str):  # SORTED: nothing is permuted, nothing kept between passes.
    # The int64 (row, col) pairs (16 B an entry) are made where each pass
    # needs them, in one fused XLA call from the flat positions, rather than
    # held from the forward to the backward pass.
    positions = lambda: _flat_to_positions(indices, n_out)
    ordered = lambda values: values
    rows_cols = lambda: _split(indices, n_out)
  else:
    rows, cols = _split(indices, n_out)
    if order is None:
      order = sort_order(indices)
    held = _sorted_positions(rows, cols, order)
    positions = lambda: held
    ordered = lambda values: tf.gather(values, order)
    rows_cols = lambda: (rows, cols)

  def csr_matrix(values):
    return tf.raw_ops.SparseTensorToCSRSparseMatrix(
        indices=positions(), values=ordered(values), dense_shape=shape)

  @custom_gradient
  def f(x, values):
    # (W^T x^T)^T = x W.
    y = tf.raw_ops.SparseMatrixMatMul(a=csr_matrix(values), b=x, transpose_a=True,
                                      transpose_b=True, transpose_output=True)

    def grad(dy):
      # The CSR matrix is rebuilt (O(nnz)) rather than kept: a variant tensor
      # crossing from a tf.function's forward to its backward has no zeros_like.
      dx = tf.raw_ops.SparseMatrixMatMul(a=csr_matrix(values), b=dy, transpose_b=True,
                                         transpose_output=True)
      return dx, _values_grad(indices, rows_cols, n_in, n_out, order)(x, dy)

    return y, grad

  return f(x, values)


@_half_to_float
def _embedding_lookup_sparse(x, values, indices, n_in, n_out, order):
  del order
  if x.shape[0] == 0:
    return _empty_batch(x, values, n_out)
  rows, cols = _split(indices, n_out)
  # Bags = output columns (forward) or input rows (backward), each needing its
  # ids sorted by bag; segment_sum stops at the last non-empty bag, so pad.
  by_col = tf.argsort(cols, stable=True)
  by_row = tf.argsort(rows, stable=True)

  def bags(bag, ids, perm, v, params, n_bags):
    b = tf.cast(tf.gather(bag, perm), tf.int64)
    sp_ids = tf.SparseTensor(tf.stack([b, tf.zeros_like(b)], 1), tf.gather(ids, perm), [n_bags, 1])
    sp_w = tf.SparseTensor(sp_ids.indices, tf.gather(v, perm), [n_bags, 1])
    out = tf.nn.embedding_lookup_sparse(params, sp_ids, sp_w, combiner="sum")
    return tf.pad(out, [[0, n_bags - tf.shape(out)[0]], [0, 0]])

  def fwd(x, v):
    return tf.transpose(bags(cols, rows, by_col, v, tf.transpose(x), n_out))

  def bwd(dy, v):
    return tf.transpose(bags(rows, cols, by_row, v, tf.transpose(dy), n_in))

  return _with_gradient(fwd, bwd, x, values, rows, cols)


@_xla
def _scatter_dense(values, indices, n_in, n_out):
  return tf.reshape(tf.scatter_nd(indices[:, None], values, [n_in * n_out]), [n_in, n_out])


@_xla
def _gather_flat(matrix, indices):
  return tf.gather(tf.reshape(matrix, [-1]), indices)


def _dense(x, values, indices, n_in, n_out, order):
  """Scatter into a dense kernel (only below DENSE_LIMIT) and use dense matmuls.

  The gradient w.r.t. values is the dense ``x^T @ dy`` gathered at the
  indices: a (small) dense intermediate, allowed because of the limit.
  """
  del order

  @custom_gradient
  def f(x, values):
    w = _scatter_dense(values, indices, n_in, n_out)
    y = tf.matmul(x, w)

    def grad(dy):
      return (tf.matmul(dy, w, transpose_b=True),
              _gather_flat(tf.matmul(x, dy, transpose_a=True), indices))

    return y, grad

  return f(x, values)


_IMPLS = {
    "csr": _csr,
    "sparse_dense_matmul": _sparse_dense_matmul,
    "gather": _gather,
    "embedding_lookup_sparse": _embedding_lookup_sparse,
    "dense": _dense,
}
