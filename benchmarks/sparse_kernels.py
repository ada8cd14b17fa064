"""Time of one sparse layer ``x @ W``: dense vs masked vs compressed, per sparsity.

For each square kernel ``[n, n]``, batch and sparsity, every variant runs as one
``tf.function``:

  dense     ``x @ W`` and its gradients w.r.t. ``x`` and ``W``
  masked    ``x @ (W * M)`` (today's SparseWrapper), gradients w.r.t. ``x``, ``W``
  <method>  ``keras_rigl.layers.kernels.sparse_matmul(x, values, indices, ...,
            method=<method>)``, gradients w.r.t. ``x`` and ``values``; the
            indices are unsorted, as after mask updates
  csr_ordered  ``method="csr"`` given ``order=sort_order(indices)`` computed
            once outside the step (a layer that caches it between updates)
  auto      the same with ``method="auto"``
  sorted    ``method="auto"`` on ascending indices with ``indices_sorted=True``:
            what the compressed layers run (they keep positions ascending)
  auto_xla  ``method="auto"`` inside ``tf.function(jit_compile=True)``

Two timings per row: ``train`` = forward + both gradients (one training step
of the layer without the optimizer) and ``infer`` = forward only, batch 1.
Dense and masked do not depend on the sparsity: they are measured once per
shape and batch. Each time is the median over ``--repeats`` rounds (each round
= ``--calls`` calls, then one sync), in milliseconds. ``x dense`` = dense time /
auto time (> 1: compressed is faster). The crossover is the lowest measured
sparsity from which ``auto`` (and the best compressed method) beats dense at
every higher measured sparsity.

Skipped, and shown as ``-``: dense/masked at 16384^2 when ``--skip_dense_above``
says so (memory), and compressed rows whose work ``nnz * batch`` exceeds
``--max_work`` (time on a small CPU) or whose gather intermediates
(``nnz * batch`` floats for ``gather`` / ``embedding_lookup_sparse``) exceed
``--max_gather_bytes``.

  python benchmarks/sparse_kernels.py                      # full grid (long on CPU)
  python benchmarks/sparse_kernels.py --quick              # 4096^2 and 16384^2,
      batch 1 and 256, 90/99/99.9%, methods csr/sparse_dense_matmul/gather,
      3 rounds (meant to take under 3 minutes on one GPU; not yet run on one)
  python benchmarks/sparse_kernels.py --device=gpu --quick

The rule of ``method="auto"`` (``kernels.choose_method``) comes from these
tables; the measured tables and their commands are in
``benchmarks/results/sparse_kernels.md``.
"""

import statistics
import os
import sys
import time

from absl import app, flags, logging
import numpy as np
import tensorflow as tf

from keras_rigl.layers import kernels

FLAGS = flags.FLAGS
flags.DEFINE_list("shapes", ["1024", "4096", "16384"], "Square kernel sizes n ([n, n]).")
flags.DEFINE_list("batches", ["1", "32", "256"], "Batch sizes.")
flags.DEFINE_list("sparsities", ["0.9", "0.95", "0.98", "0.99", "0.999"], "Sparsities.")
flags.DEFINE_list("methods", ["csr", "csr_ordered", "sparse_dense_matmul", "gather",
                               "embedding_lookup_sparse"],
                  "Compressed methods (or csr_ordered) to time besides auto.")
flags.DEFINE_bool("xla", True, "Also time method='auto' under jit_compile=True (auto_xla).")
flags.DEFINE_integer("repeats", 5, "Rounds per timing (median).")
flags.DEFINE_integer("calls", 0, "Calls per round (0: 1 on CPU, 5 on GPU).")
flags.DEFINE_bool("quick", False, "Fewer shapes, batches, sparsities and repeats (see docstring).")
flags.DEFINE_enum("device", "auto", ["auto", "cpu", "gpu"], "Where to run (auto: GPU if present).")
flags.DEFINE_float("max_work", 2.0**30, "Skip compressed rows with nnz * batch above this (CPU only).")
flags.DEFINE_float("max_gather_bytes", 2.0**31, "Skip gather-style rows whose [nnz, batch] "
                   "intermediate exceeds this many bytes.")
flags.DEFINE_integer("skip_dense_above", 0, "Skip dense/masked for n above this (0: skip when the "
                     "dense weight, mask and gradients would not fit in a quarter of the memory).")
flags.DEFINE_string("out", "", "Also write the tables (markdown) to this file.")


def distinct_positions(size, nnz, rng):
  """nnz distinct positions of range(size) in random order, in O(nnz) memory."""
  dtype = np.int64 if size >= 2**31 else np.int32
  if nnz * 4 > size:  # dense enough: a permutation is cheap
    return rng.permutation(size)[:nnz].astype(dtype)
  picked = np.unique(rng.integers(0, size, int(nnz * 1.1) + 16))
  while picked.size < nnz:
    picked = np.unique(np.concatenate([picked, rng.integers(0, size, nnz)]))
  return rng.permutation(rng.choice(picked, nnz, replace=False)).astype(dtype)


def timed(fns, device_is_gpu):
  """Median milliseconds per call of each fn, interleaved over the rounds.

  Interleaving (every variant once per round) keeps ratios fair when other
  processes share the CPU and the load drifts during the run.
  """
  calls = FLAGS.calls or (5 if device_is_gpu else 1)
  sync = lambda out: [t.numpy().ravel()[:1] for t in tf.nest.flatten(out)]  # pylint: disable=unnecessary-lambda-assignment
  for fn in fns.values():
    sync(fn())  # trace and compile
  times = {k: [] for k in fns}
  for _ in range(FLAGS.repeats):
    for key, fn in fns.items():
      t0 = time.perf_counter()
      for _ in range(calls):
        out = fn()
      sync(out)
      times[key].append((time.perf_counter() - t0) * 1000 / calls)
  return {k: statistics.median(v) for k, v in times.items()}


def train_fn(matmul, x, w, up, jit=False):
  """Forward + gradients w.r.t. x and the weight (a Variable), as one tf.function."""

  @tf.function(jit_compile=jit)
  def step():
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = matmul(x, w)
      loss = tf.reduce_sum(y * up)
    return tape.gradient(loss, [x, w])

  return step


def infer_fn(matmul, x, w, jit=False):
  return tf.function(lambda: matmul(x, w), jit_compile=jit)


def memory_bytes():
  try:
    import os  # pylint: disable=g-import-not-at-top
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return 16 * 2**30


def run(device_name, is_gpu):
  rng = np.random.default_rng(0)
  rows, notes = [], []
  mem = memory_bytes()
  if is_gpu:  # TF reports no total; assume a data-centre card (H100/H200) or else 16 GiB
    info = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    mem = 80 * 2**30 if "H" in info.get("device_name", "") else 16 * 2**30
  variants = list(FLAGS.methods) + ["auto"] + (["auto_xla"] if FLAGS.xla else [])
  for n in map(int, FLAGS.shapes):
    dense_bytes = 4 * n * n
    skip_dense = (n > FLAGS.skip_dense_above) if FLAGS.skip_dense_above else 5 * dense_bytes > mem / 4
    if skip_dense:
      notes.append(f"{n}^2: dense and masked skipped (dense W, M and gradients need "
                   f"{5 * dense_bytes / 2**30:.1f} GiB)")
    for batch in map(int, FLAGS.batches):
      with tf.device(device_name):
        x = tf.constant(rng.standard_normal((batch, n)).astype(np.float32))
        up = tf.constant(rng.standard_normal((batch, n)).astype(np.float32))
        fns = {}  # (sparsity or None, variant + suffix) -> fn; all timed interleaved
        if not skip_dense:
          w = tf.Variable(tf.random.normal([n, n], stddev=0.01, seed=1))
          m = tf.Variable(tf.cast(tf.random.uniform([n, n], seed=2) > 0.9, tf.float32))
          masked = lambda a, b, m=m: tf.matmul(a, b * m)  # pylint: disable=unnecessary-lambda-assignment
          fns[None, "dense"] = train_fn(tf.matmul, x, w, up)
          fns[None, "masked"] = train_fn(masked, x, w, up)
          if batch == 1:
            fns[None, "dense_infer"] = infer_fn(tf.matmul, x, w)
            fns[None, "masked_infer"] = infer_fn(masked, x, w)
        picks = {}
        for s in map(float, FLAGS.sparsities):
          nnz = n * n - int(np.floor(s * n * n))
          idx = tf.constant(distinct_positions(n * n, nnz, rng))
          v = tf.Variable(tf.random.normal([nnz], stddev=0.01, seed=3))
          picks[s] = (nnz, kernels.choose_method(n, n, nnz, batch, "GPU" if is_gpu else "CPU"))
          too_big = not is_gpu and nnz * batch > FLAGS.max_work
          for variant in variants:
            method = "auto" if variant == "auto_xla" else variant
            gather_like = method in ("gather", "embedding_lookup_sparse") or (
                variant == "auto_xla") or (method == "auto" and picks[s][1] == "gather")
            if too_big or (gather_like and batch > 1 and 4 * nnz * batch > FLAGS.max_gather_bytes):
              continue
            order, sorted_ = None, False
            if method == "sorted":  # what compressed layers run
              method, sorted_ = "auto", True
            if method == "csr_ordered":  # a layer that keeps sort_order(indices) between updates
              method, order = "csr", kernels.sort_order(idx)
            mm = lambda a, b, method=method, idx=(tf.sort(idx) if sorted_ else idx), order=order, \
                sorted_=sorted_: kernels.sparse_matmul(  # pylint: disable=unnecessary-lambda-assignment
                    a, b, idx, n, n, method=method, order=order, indices_sorted=sorted_)
            jit = variant == "auto_xla"
            fns[s, variant] = train_fn(mm, x, v, up, jit)
            if batch == 1:
              fns[s, variant + "_infer"] = infer_fn(mm, x, v, jit)
        times = timed(fns, is_gpu)
        base = {k: t for (s, k), t in times.items() if s is None}
        for s, (nnz, pick) in picks.items():
          row = dict(n=n, batch=batch, sparsity=s, nnz=nnz, auto_is=pick, **base)
          row.update({k: t for (s2, k), t in times.items() if s2 == s})
          rows.append(row)
        print(f"  done n={n} batch={batch}", file=sys.stderr, flush=True)
        if FLAGS.out:  # partial tables, in case a long CPU run is stopped
          with open(FLAGS.out + ".partial", "w", encoding="utf-8") as f:
            f.write(tables(rows, notes, variants, "(partial)") + "\n")
        del fns
  return rows, notes, variants


def fmt(v):
  return "-" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}")


def tables(rows, notes, variants, header):
  out = [header, ""]
  for kind, suffix in (("train (forward + backward), ms", ""), ("inference, batch 1, ms", "_infer")):
    sel = [r for r in rows if suffix == "" or r["batch"] == 1]
    cols = ["dense", "masked"] + variants
    out.append(f"### {kind}")
    out.append("")
    out.append("| n | batch | sparsity | " + " | ".join(cols) + " | auto picks | x dense |")
    out.append("|" + "---|" * (len(cols) + 5))
    for r in sel:
      vals = [r.get(c + suffix) for c in cols]
      ratio = (r.get("dense" + suffix) / r["auto" + suffix]
               if r.get("dense" + suffix) and r.get("auto" + suffix) else None)
      out.append(f"| {r['n']} | {r['batch']} | {r['sparsity']:.3f} | "
                 + " | ".join(fmt(v) for v in vals)
                 + f" | {r['auto_is']} | "
                 + ("-" if ratio is None else f"{ratio:.2f}") + " |")
    out.append("")
    out.append(f"Crossover ({kind.split(',')[0]}): lowest sparsity from which compressed beats dense")
    out.append("")
    out.append("| n | batch | auto | best method |")
    out.append("|---|---|---|---|")
    keys = sorted({(r["n"], r["batch"]) for r in sel})
    for key in keys:
      group = sorted((r for r in sel if (r["n"], r["batch"]) == key), key=lambda r: r["sparsity"])

      def crossover(get):
        found = None
        for r in reversed(group):
          d, t = r.get("dense" + suffix), get(r)
          if d is None:
            return "no dense"
          if t is None:  # lower sparsities skipped (--max_work / --max_gather_bytes)
            return f"{found} (lower not run)" if found else "not run"
          if t < d:
            found = f"{r['sparsity']:.3f}"
          else:
            break
        return found or "none"

      best = lambda r: min([r[c + suffix] for c in variants if r.get(c + suffix) is not None],  # pylint: disable=unnecessary-lambda-assignment
                           default=None)
      out.append(f"| {key[0]} | {key[1]} | {crossover(lambda r: r.get('auto' + suffix))} | "
                 f"{crossover(best)} |")
    out.append("")
  out += [f"- {n}" for n in notes]
  return "\n".join(out)


def main(_):
  tf.get_logger().setLevel("ERROR")  # retracing warnings: every variant is its own tf.function
  logging.set_verbosity(logging.ERROR)
  if FLAGS.quick:
    for name, value in (("shapes", ["4096", "16384"]), ("batches", ["1", "256"]),
                        ("sparsities", ["0.9", "0.99", "0.999"]),
                        ("methods", ["csr", "sparse_dense_matmul", "gather"])):
      if not FLAGS[name].present:
        FLAGS[name].value = value
    if not FLAGS["repeats"].present:
      FLAGS.repeats = 3
  gpus = tf.config.list_physical_devices("GPU")
  is_gpu = FLAGS.device == "gpu" or (FLAGS.device == "auto" and bool(gpus))
  if is_gpu and not gpus:
    raise SystemExit("--device=gpu but TensorFlow sees no GPU.")
  device_name = "/GPU:0" if is_gpu else "/CPU:0"
  if is_gpu:
    desc = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
  else:
    import os  # pylint: disable=g-import-not-at-top
    desc = f"CPU, {os.cpu_count()} cores, load {' '.join(f'{l:.2f}' for l in os.getloadavg())}"
  t0 = time.time()
  rows, notes, variants = run(device_name, is_gpu)
  import subprocess  # pylint: disable=g-import-not-at-top
  try:
    commit = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse",
                             "--short", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown"
  header = (f"## sparse_kernels on {desc} (TF {tf.__version__}, repeats {FLAGS.repeats}, "
            f"{time.time() - t0:.0f} s, code {commit})\n\n`{' '.join(sys.argv)}`")
  text = tables(rows, notes, variants, header)
  print(text)
  if FLAGS.out:
    with open(FLAGS.out, "a", encoding="utf-8") as f:
      f.write(text + "\n\n")


if __name__ == "__main__":
  app.run(main)
