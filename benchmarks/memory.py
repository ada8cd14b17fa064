r"""Memory of dense, masked and compressed sparse MLPs: stored bytes and peak RSS.

Three tables:

1. Variables + optimizer slots (bytes, counted from the variables) of an MLP
   784 -> W -> W -> 10 (uniform sparsity on every kernel) with SGD-momentum
   and Adam, and per hidden layer the ratio compressed / ((1 - s) x dense),
   target <= 1.4 with Adam (indices included).
2. Peak RSS, each variant in a fresh subprocess: the RSS after building and
   compiling, and the extra peak (VmHWM after resetting it through
   /proc/self/clear_refs, minus the RSS just before) of the first training
   step (slots created) and of the first RigL update (both include tracing,
   so they are upper bounds), and the time of a second step / update.
3. Peak RSS of one RigL update of a 16384x16384 SparseDense at 99% (target:
   extra < 0.5 x the dense kernel's 1 GiB), and the widest MLP each storage
   trains (one step + one RigL update) within a fixed budget of memory above
   the bare TensorFlow process (target: compressed >= 3 x dense width at 95%).
4. Breakdown of the widest table's need at one width (``--tables=breakdown``):
   TensorFlow allocator bytes (live, and the peak transients of the step and
   of the update) against peak RSS, per stored entry.

  python benchmarks/memory.py                 # everything (~15 min on 2 busy cores)
  python benchmarks/memory.py --quick         # fewer variants, smaller sizes
  python benchmarks/memory.py --tables=big    # only the 16384^2 update
  python benchmarks/memory.py --tables=breakdown --breakdown_width 12288 --widest_sparsity 0.95
"""

import argparse
import json
import os
import subprocess
import sys
import time

SPARSITIES = (0.9, 0.95, 0.98, 0.99, 0.999)
OPTIMIZERS = ("sgdm", "adam")
STORAGES = ("dense", "masked", "compressed")


def _status(field):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise KeyError(field)


def _reset_peak():
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # Resets VmHWM to the current RSS.


def _tf_bytes(reset=False):
  """(live, peak) bytes of TensorFlow's CPU allocator, or None where it keeps no stats.

  The tensors alone, without the process's code, graphs and what the
  allocator holds but does not use: RSS minus these is that overhead. (The
  oneDNN CPU allocator, TensorFlow's default on x86 Linux, keeps the stats.)
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    if reset:
      tf.config.experimental.reset_memory_stats("CPU:0")
    info = tf.config.experimental.get_memory_info("CPU:0")
  except (ValueError, RuntimeError):
    return None
  return info["current"], info["peak"]


# --------------------------------------------------------------------------
# The child: one variant per process.


def _build(storage, sparsity, width, n_in=784, n_out=10, distribution="uniform"):
  import keras_rigl as kr  # pylint: disable=g-import-not-at-top
  from keras_rigl._keras import keras  # pylint: disable=g-import-not-at-top
  dims = [n_in, width, width, n_out]
  names = [f"fc{i}" for i in range(len(dims) - 1)]
  if storage == "compressed":
    # Built directly: a compressed model never exists in dense form.
    shapes = {n: (a, b) for n, a, b in zip(names, dims[:-1], dims[1:])}
    per_layer = kr.layer_sparsities(shapes, sparsity, distribution)
    layers = [keras.Input((n_in,))]
    for i, name in enumerate(names):
      activation = "relu" if i < len(names) - 1 else None
      if per_layer[name] > 0:
        layers.append(kr.layers.SparseDense(dims[i + 1], per_layer[name], activation=activation,
                                            name=name))
      else:
        layers.append(keras.layers.Dense(dims[i + 1], activation=activation, name=name))
    return keras.Sequential(layers)
  model = keras.Sequential([keras.Input((n_in,))] + [
      keras.layers.Dense(d, activation="relu" if i < len(names) - 1 else None, name=n)
      for i, (n, d) in enumerate(zip(names, dims[1:]))])
  if storage == "masked":
    model = kr.sparsify(model, sparsity, distribution)
  return model


def _optimizer(name):
  from keras_rigl._keras import keras  # pylint: disable=g-import-not-at-top
  if name == "adam":
    return keras.optimizers.Adam(1e-3)
  return keras.optimizers.SGD(0.01, momentum=0.9)


def _variable_bytes(variables):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  total = 0
  for v in variables:
    total += int(v.shape.num_elements() if hasattr(v.shape, "num_elements") else
                 __import__("numpy").prod(v.shape)) * tf.as_dtype(v.dtype).size
  return total


def _layer_bytes(model, optimizer):
  """{layer: bytes of its variables and their optimizer slots}."""
  from keras_rigl import _keras  # pylint: disable=g-import-not-at-top
  out = {}
  for layer in model.layers:
    inner = getattr(layer, "layer", layer)
    own = [v for v in layer.weights if "bias" not in v.name]
    slots = [s for v in layer.trainable_weights if "bias" not in v.name
             for s in _keras.optimizer_slots(optimizer, v)]
    out[inner.name] = _variable_bytes(own + slots)
  return out


def child(spec):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import keras_rigl as kr  # pylint: disable=g-import-not-at-top
  result = {"rss_import": _status("VmRSS")}
  storage, sparsity, width = spec["storage"], spec["sparsity"], spec["width"]
  batch = spec.get("batch", 128)
  n_in = spec.get("n_in", 784)
  n_out = spec.get("n_out", 10)
  if spec.get("single"):
    from keras_rigl._keras import keras  # pylint: disable=g-import-not-at-top
    model = keras.Sequential([keras.Input((n_in,)),
                              kr.layers.SparseDense(width, sparsity, name="big")])
    n_out = width
    loss = "mse"
  else:
    model = _build(storage, sparsity, width, n_in, n_out)
    loss = "sparse_categorical_crossentropy"
  optimizer = _optimizer(spec["optimizer"])
  model.compile(optimizer, loss)
  r = np.random.default_rng(0)
  x = r.normal(size=(batch, n_in)).astype("float32")
  y = (r.normal(size=(batch, n_out)).astype("float32") if spec.get("single")
       else r.integers(0, n_out, batch).astype("int32"))
  # Peaks are measured on the FIRST step and update (tracing and slot creation
  # included): memory a warm-up already touched would hide in the RSS.
  _reset_peak()
  result["rss_base"] = _status("VmRSS")
  result["tf_base"] = _tf_bytes(reset=True)
  model.train_on_batch(x, y)
  result["peak_step"] = _status("VmHWM")
  result["tf_step"] = _tf_bytes()
  start = time.perf_counter()
  model.train_on_batch(x, y)
  result["step_s"] = time.perf_counter() - start
  result["var_bytes"] = _variable_bytes(model.weights) + _variable_bytes(
      [v for v in optimizer.variables if len(v.shape)])
  result["layer_bytes"] = _layer_bytes(model, optimizer)
  if storage != "dense":
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    rigl = kr.RigLScheduler(data, update_freq=1, drop_fraction=0.3, end_step=10**9)
    rigl.set_model(model)
    rigl.set_params({"epochs": 1, "steps": 10, "verbose": 0})
    rigl.on_train_begin()
    _reset_peak()
    result["rss_update_base"] = _status("VmRSS")
    result["tf_update_base"] = _tf_bytes(reset=True)
    rigl.on_train_batch_begin(0)
    result["peak_update"] = _status("VmHWM")
    result["tf_update"] = _tf_bytes()
    result["stored"] = int(sum(w.values.shape[0] for layer in model.layers
                               for w in getattr(layer, "compressed_weights", [])))
    # A second update, timed: the scheduler updates once per optimizer step,
    # so move the step counter on by one (update_freq is 1).
    optimizer.iterations.assign_add(1)
    start = time.perf_counter()
    rigl.on_train_batch_begin(1)
    result["update_s"] = time.perf_counter() - start
    result["updates"] = rigl.updates
    if spec.get("single"):
      result["gemm_limit_s"] = _gemm_limit(x, batch, n_in, width)
  print("RESULT " + json.dumps(result))


def _gemm_limit(x, batch, n_in, n_out, block_elements=1 << 21):
  """Seconds this machine's dense GEMM takes for batch * n_in * n_out multiply-adds.

  The dense gradient x^T d that RigL's growth needs, computed as the update
  does (one 8 MiB block of rows at a time, so nothing of the dense size
  exists): median of 5 timings of one block, times the number of blocks.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rows = max(1, min(n_in, block_elements // n_out))
  a = tf.constant(np.asarray(x)[:, :rows])
  d = tf.random.normal([batch, n_out])
  block = tf.function(lambda: tf.reduce_sum(tf.matmul(a, d, transpose_a=True)))
  block()
  times = []
  for _ in range(5):
    start = time.perf_counter()
    block().numpy()
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * (-(-n_in // rows))


# --------------------------------------------------------------------------
# The parent: one subprocess per variant, tables.


def run(spec, timeout=3600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                        capture_output=True, text=True, timeout=timeout, env=env, check=False)
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-3000:]}")


def _commit():
  """The git commit the benchmark runs on (+dirty when the tree has changes)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + ("+dirty" if dirty else "")


def mib(n):
  return f"{n / 2**20:,.1f}"


def collect(width, sparsities, optimizers):
  """{(optimizer, storage, sparsity): child result}, one subprocess each."""
  results = {}
  for opt in optimizers:
    variants = [("dense", 0.0)] + [(st, s) for st in ("masked", "compressed") for s in sparsities]
    for storage, s in variants:
      results[(opt, storage, s)] = run({"storage": storage, "sparsity": s, "width": width,
                                        "optimizer": opt})
  return results


def table_bytes(results, width):
  print(f"\n## Variables + optimizer slots, MLP 784-{width}-{width}-10 (uniform)\n")
  print("| optimizer | storage | sparsity | total MiB | x dense | hidden layer MiB | "
        "hidden / ((1-s) x dense) |")
  print("|---|---|---|---:|---:|---:|---:|")
  for (opt, storage, s), res in results.items():
    dense = results[(opt, "dense", 0.0)]
    hidden, dense_hidden = res["layer_bytes"]["fc1"], dense["layer_bytes"]["fc1"]
    ratio = f"{hidden / ((1 - s) * dense_hidden):.3f}" if s else ""
    print(f"| {opt} | {storage} | {s} | {mib(res['var_bytes'])} | "
          f"{res['var_bytes'] / dense['var_bytes']:.3f} | {mib(hidden)} | {ratio} |")


def table_rss(results, width):
  print(f"\n## Peak RSS of the first step / update above the RSS before it, "
        f"MLP 784-{width}-{width}-10, batch 128\n")
  print("| optimizer | storage | sparsity | RSS after build MiB | "
        "step extra MiB | RigL update extra MiB | step s | update s |")
  print("|---|---|---|---:|---:|---:|---:|---:|")
  for (opt, storage, s), res in results.items():
    update = (mib(res["peak_update"] - res["rss_update_base"]) if "peak_update" in res
              else "")
    print(f"| {opt} | {storage} | {s} | {mib(res['rss_base'])} | "
          f"{mib(res['peak_step'] - res['rss_base'])} | {update} | {res['step_s']:.3f} | "
          f"{res.get('update_s', float('nan')):.2f} |")


def table_big(width, sparsity):
  res = run({"storage": "compressed", "sparsity": sparsity, "width": width, "n_in": width,
             "optimizer": "adam", "single": True, "batch": 128})
  dense_bytes = width * width * 4
  extra = res["peak_update"] - res["rss_update_base"]
  print(f"\n## One RigL update of a {width}x{width} SparseDense at {sparsity}, Adam, batch 128\n")
  print("| dense kernel MiB | vars+slots MiB | RSS before update MiB | update extra peak MiB | "
        "extra / dense kernel | update s | dense GEMM limit s | update / limit | step s |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  print(f"| {mib(dense_bytes)} | {mib(res['var_bytes'])} | {mib(res['rss_update_base'])} | "
        f"{mib(extra)} | {extra / dense_bytes:.3f} | {res['update_s']:.2f} | "
        f"{res['gemm_limit_s']:.2f} | {res['update_s'] / res['gemm_limit_s']:.2f} | "
        f"{res['step_s']:.2f} |", flush=True)


def _needed(storage, sparsity, width, opt):
  """Memory one step + one RigL update needs above the bare TF process."""
  res = run({"storage": storage, "sparsity": sparsity, "width": width, "optimizer": opt})
  peak = max(res["peak_step"], res.get("peak_update", 0), res["rss_base"])
  return peak - res["rss_import"]


def widest(storage, sparsity, budget, opt, start):
  """Largest width (to ~6%) whose needed memory fits `budget` bytes."""
  lo, hi, width = 0, None, start
  log = []
  while hi is None:
    need = _needed(storage, sparsity, width, opt)
    log.append((width, need))
    if need <= budget:
      lo, width = width, width * 2
    else:
      hi = width
    if lo == 0 and hi is not None:
      return 0, log
  while hi - lo > max(64, lo // 16):
    width = (lo + hi) // 2 // 64 * 64
    need = _needed(storage, sparsity, width, opt)
    log.append((width, need))
    lo, hi = (width, hi) if need <= budget else (lo, width)
  return lo, log


def table_widest(budget_mib, sparsity, opt, storages=STORAGES):
  budget = budget_mib * 2**20
  print(f"\n## Widest MLP 784-W-W-10 trainable (one step + one RigL update) within "
        f"{budget_mib} MiB above the bare TensorFlow process, {opt}, batch 128\n")
  print("| storage | sparsity | widest W | x dense width | tried (W: MiB needed) |")
  print("|---|---|---:|---:|---|")
  results = {}
  for storage, s, start in (("dense", 0.0, 1024), ("masked", sparsity, 1024),
                            ("compressed", sparsity, 2048)):
    if storage not in storages:
      continue
    w, log = widest(storage, s, budget, opt, start)
    results[storage] = w
    tried = ", ".join(f"{a}: {b / 2**20:.0f}" for a, b in log)
    ratio = w / results["dense"] if results.get("dense") else float("nan")
    print(f"| {storage} | {s} | {w} | {ratio:.2f} | {tried} |", flush=True)


def table_breakdown(width, sparsity, opt="adam"):
  """Where the memory of the widest table's run goes, at one width."""
  res = run({"storage": "compressed", "sparsity": sparsity, "width": width, "optimizer": opt})
  print(f"\n## Memory breakdown, compressed MLP 784-{width}-{width}-10 at {sparsity} (uniform), "
        f"{opt}, batch 128: one step, then one RigL update\n")
  if not res.get("tf_step") or not res.get("tf_update"):
    print("TensorFlow's CPU allocator keeps no statistics here (oneDNN off?): no breakdown.")
    return
  entries = res["stored"]
  per = lambda n: f"{n / entries:.1f}"
  need = max(res["peak_step"], res["peak_update"]) - res["rss_import"]
  step_live, step_peak = res["tf_step"]
  update_base, update_peak = res["tf_update_base"][0], res["tf_update"][1]
  rows = [
      ("needed (peak RSS above the bare TF process)", need),
      ("tensors live after the first step (variables, slots)", step_live),
      ("tensor transients of the first step (TF allocator peak - live before)",
       step_peak - res["tf_base"][0]),
      ("tensors live before the update", update_base),
      ("tensor transients of the update (TF allocator peak - live before)",
       update_peak - update_base),
      ("process overhead at the peak (needed - TF allocator peak)",
       need - max(step_peak, update_peak)),
  ]
  print(f"{entries:,} stored entries.\n")
  print("| what | MiB | B per stored entry |")
  print("|---|---:|---:|")
  for what, n in rows:
    print(f"| {what} | {mib(n)} | {per(n)} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--child", help=argparse.SUPPRESS)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--tables", default="bytes,big,widest",
                      help="bytes (with the peak RSS table), big, widest, breakdown")
  parser.add_argument("--width", type=int, default=None)
  parser.add_argument("--big", type=int, default=16384)
  parser.add_argument("--budget_mib", type=int, default=1024)
  parser.add_argument("--widest_storages", default=",".join(STORAGES))
  parser.add_argument("--widest_sparsity", type=float, default=0.95)
  parser.add_argument("--breakdown_width", type=int, default=12288)
  args = parser.parse_args()
  if args.child:
    child(json.loads(args.child))
    return
  tables = args.tables.split(",")
  width = args.width or (1024 if args.quick else 4096)
  sparsities = (0.9, 0.99) if args.quick else SPARSITIES
  load = os.getloadavg()
  print(f"# keras-rigl memory benchmark ({'quick' if args.quick else 'full'}); load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs; code: "
        f"{_commit()}")
  if "bytes" in tables or "rss" in tables:
    results = collect(width, sparsities, OPTIMIZERS)
    table_bytes(results, width)
    table_rss(results, width)
  if "big" in tables:
    table_big(4096 if args.quick else args.big, 0.99)
  if "widest" in tables:
    table_widest(256 if args.quick else args.budget_mib, args.widest_sparsity, "adam",
                 args.widest_storages.split(","))
  if "breakdown" in tables:
    table_breakdown(2048 if args.quick else args.breakdown_width, args.widest_sparsity)


if __name__ == "__main__":
  main()
