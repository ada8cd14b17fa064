r"""Step time of the authors' ImageNet recipes run as a TPU runs them: RigL vs static vs dense.

Each run is `keras_rigl.recipes.run` on a synthetic ImageNet
(examples/make_synthetic_imagenet.py, written once into --data_dir if it is
empty) under MirroredStrategy on --cpu_devices logical CPUs, the train step
compiled by XLA (--jit_compile) and --steps_per_execution steps per call.
Every variant runs in a fresh process; the repeats are interleaved (dense,
static, rigl, dense, static, rigl, ...). The step time of a run is measured
from the end of its first execution (XLA compilation and the step-0 update
excluded) to the end of training, so the window holds the RigL updates at
--update_freq, 2 x --update_freq, ...

Variants (--variants, comma separated):
  dense            --method=dense
  static           --method=static (masks fixed)
  rigl             --method=rigl as the recipe builds it: the update inside
                   the compiled train step, grow scores from the step's own
                   gradient
  rigl_data        --method=rigl --grow_scores=data: the host-scheduled update
                   with its own gradient batches (steps_per_execution must
                   divide update_freq)
  rigl_no_update   --method=rigl with its first update far after the run: the
                   same model and step, no update. rigl minus rigl_no_update,
                   per update in the window, is the cost of one update.

Ratios (x / dense, rigl / static) are taken within each repeat, then the
median over repeats, for wall time and for the process's CPU time (which other
jobs on the machine disturb far less than wall time). A table is printed and appended to
benchmarks/results/imagenet_compiled.md with the machine load.

  python benchmarks/imagenet_compiled.py --data_dir=/tmp/fake_imagenet
  python benchmarks/imagenet_compiled.py --configs=imagenet_resnet50 \
      --image_size=32 --batch_size=8 --train_steps=200 --repeats=3
"""

import json
import os
import statistics
import subprocess
import sys
import time

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Config changes of each variant (Config.replace).
VARIANTS = {
    "dense": dict(method="dense"),
    "static": dict(method="static"),
    "rigl": dict(method="rigl"),
    "rigl_data": dict(method="rigl", grow_scores="data"),
    "rigl_no_update": dict(method="rigl", begin_step=100_000_000, end_step=100_000_000),
}
CONFIGS = ("imagenet_resnet50", "imagenet_mobilenet_v1")
SPARSITY = {"imagenet_resnet50": 0.8, "imagenet_mobilenet_v1": 0.9}

flags.DEFINE_list("configs", list(CONFIGS), "Named recipes to time.")
flags.DEFINE_list("variants", ["dense", "static", "rigl", "rigl_no_update"],
                  f"Variants, of {sorted(VARIANTS)}.")
flags.DEFINE_string("data_dir", "/tmp/keras_rigl_synthetic_imagenet",
                    "Synthetic ImageNet shards (written there if absent).")
flags.DEFINE_integer("image_size", 64, "Image size of the runs.", lower_bound=8)
flags.DEFINE_integer("batch_size", 16, "Global batch size.", lower_bound=2)
flags.DEFINE_integer("train_steps", 200, "Steps per run.", lower_bound=2)
flags.DEFINE_integer("steps_per_execution", 10, "Steps per compiled call.",
                     lower_bound=1)
flags.DEFINE_integer("update_freq", 50, "Steps between RigL updates.", lower_bound=1)
flags.DEFINE_integer("cpu_devices", 2, "Logical CPUs (= replicas).", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Interleaved repeats of every variant.",
                     lower_bound=1)
flags.DEFINE_string("results", os.path.join(_ROOT, "benchmarks", "results",
                                            "imagenet_compiled.md"),
                    "Markdown file the table is appended to ('' for none).")
flags.DEFINE_string("worker", None, "Internal: 'CONFIG:VARIANT' to time in this "
                    "process (prints one RESULT json line).")


def _check(f):
  unknown = [v for v in f.variants if v not in VARIANTS]
  if unknown:
    raise app.UsageError(f"Unknown --variants {unknown}; use some of {sorted(VARIANTS)}.")
  bad = [c for c in f.configs if c not in CONFIGS]
  if bad:
    raise app.UsageError(f"Unknown --configs {bad}; use some of {list(CONFIGS)}.")
  if f.update_freq % f.steps_per_execution:
    raise app.UsageError(
        f"--steps_per_execution={f.steps_per_execution} must divide --update_freq="
        f"{f.update_freq} while the RigL update is a host callback.")
  if f.train_steps % f.steps_per_execution:
    raise app.UsageError("--steps_per_execution must divide --train_steps.")
  if f.batch_size % f.cpu_devices:
    raise app.UsageError(f"--batch_size={f.batch_size} must split over "
                         f"--cpu_devices={f.cpu_devices}.")


def _worker(f):
  """Runs one variant in this process and prints its timing."""
  from examples import quiet
  quiet.import_tensorflow(False)
  import tempfile
  from keras_rigl import recipes
  from keras_rigl._keras import keras

  name, variant = f.worker.split(":")

  class Clock(keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.ends = []

    def on_train_batch_end(self, batch, logs=None):
      self.ends.append((int(self.model.optimizer.iterations.numpy()), time.perf_counter(),
                        time.process_time()))

  clock = Clock()
  config = recipes.get_config(name).replace(
      sparsity=SPARSITY[name], batch_size=f.batch_size, train_steps=f.train_steps,
      epochs=None, update_freq=f.update_freq, **VARIANTS[variant])
  with tempfile.TemporaryDirectory() as model_dir:
    options = recipes.RunOptions(
        config_name=name, strategy="mirrored", cpu_devices=f.cpu_devices,
        jit_compile=True, steps_per_execution=f.steps_per_execution,
        image_size=f.image_size, steps_per_epoch=f.train_steps, eval_steps=1,
        data_dir=f.data_dir, model_dir=model_dir, verbose=0, print_report=False)
    report = recipes.run(config, options, callbacks=[clock])
  (first_step, first, first_cpu), (last_step, last, last_cpu) = clock.ends[0], clock.ends[-1]
  updates = [u["step"] for u in report.get("mask_updates", [])]
  in_window = [s for s in updates if first_step <= s < last_step]
  print("RESULT " + json.dumps({
      "config": name, "variant": variant, "steps": last_step - first_step,
      "step_ms": 1000 * (last - first) / (last_step - first_step),
      "cpu_ms": 1000 * (last_cpu - first_cpu) / (last_step - first_step),
      "updates_in_window": len(in_window), "updates": updates}), flush=True)


def _run_one(f, config, variant):
  argv = [sys.executable, os.path.abspath(__file__), f"--worker={config}:{variant}"]
  for name in ("data_dir", "image_size", "batch_size", "train_steps",
               "steps_per_execution", "update_freq", "cpu_devices"):
    argv.append(f"--{name}={getattr(f, name)}")
  env = dict(os.environ, PYTHONPATH=_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
  for line in out.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  raise RuntimeError(f"{config}:{variant} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def _ensure_data(f):
  from keras_rigl.data import imagenet_records
  if imagenet_records.has_records(f.data_dir):
    return
  from examples import make_synthetic_imagenet
  make_synthetic_imagenet.write_dataset(f.data_dir)


def _load():
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _table(f, runs, load_before, load_after):
  lines = [f"\n## {time.strftime('%Y-%m-%d %H:%M')} (Keras flavour: "
           f"{'tf_keras' if os.environ.get('TF_USE_LEGACY_KERAS') == '1' else 'keras3'})\n",
           f"`{' '.join(sys.argv)}`; image {f.image_size}px, batch {f.batch_size}, "
           f"{f.train_steps} steps, steps_per_execution {f.steps_per_execution}, "
           f"update_freq {f.update_freq}, MirroredStrategy over {f.cpu_devices} logical "
           f"CPUs, jit_compile; {f.repeats} interleaved repeats, medians. Load (1/5/15 "
           f"min) before: {load_before}; after: {load_after}.\n",
           "| config | variant | step ms (median) | runs | x / dense | CPU ms/step (median) "
           "| CPU x / dense | updates in window |",
           "|---|---|---|---|---|---|---|---|"]
  per_update = []
  for config in f.configs:
    def times(variant, key="step_ms"):
      return [r[key] for r in runs if r["config"] == config and r["variant"] == variant]
    dense, dense_cpu = times("dense"), times("dense", "cpu_ms")
    for variant in f.variants:
      t, cpu = times(variant), times(variant, "cpu_ms")
      ratio = cpu_ratio = "-"
      if dense and variant != "dense":
        ratio = f"{statistics.median(a / b for a, b in zip(t, dense)):.3f}"
        cpu_ratio = f"{statistics.median(a / b for a, b in zip(cpu, dense_cpu)):.3f}"
      updates = [r["updates_in_window"] for r in runs
                 if r["config"] == config and r["variant"] == variant]
      lines.append(f"| {config} | {variant} | {statistics.median(t):.1f} | "
                   f"{', '.join(f'{x:.0f}' for x in t)} | {ratio} | "
                   f"{statistics.median(cpu):.1f} | {cpu_ratio} | {max(updates)} |")
    with_update, without = times("rigl"), times("rigl_no_update")
    if with_update and without:
      n = max(r["updates_in_window"] for r in runs
              if r["config"] == config and r["variant"] == "rigl")
      steps = next(r["steps"] for r in runs if r["config"] == config)
      if n:
        cost = statistics.median((a - b) * steps / n for a, b in zip(with_update, without))
        per_update.append(f"- {config}: one RigL update costs {cost:.0f} ms "
                          f"((rigl - rigl_no_update) step time x {steps} steps / {n} "
                          "updates, median over repeats).")
  return "\n".join(lines + [""] + per_update) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.worker:
    _worker(f)
    return
  _check(f)
  _ensure_data(f)
  load_before = _load()
  runs = []
  for repeat in range(f.repeats):
    for config in f.configs:
      for variant in f.variants:
        result = _run_one(f, config, variant)
        runs.append(result)
        print(f"repeat {repeat}: {config} {variant}: {result['step_ms']:.1f} ms/step, "
              f"CPU {result['cpu_ms']:.1f} ms/step (updates {result['updates']})", flush=True)
  table = _table(f, runs, load_before, _load())
  print(table)
  if f.results:
    with open(f.results, "a", encoding="utf-8") as out:
      out.write(table)


if __name__ == "__main__":
  app.run(main)
