r"""Test accuracy of sparse training methods on Fashion-MNIST (LeNet-300-100, LeNet-5).

Every variant gets the budget of one named setup (`--config`, default
`fashion_mnist_lenet300_100`: batch 128, SGD with Nesterov momentum, lr 0.1
x0.1 at half and three quarters of the run, 10 epochs unless --epochs says
otherwise; `fashion_mnist_mlp_rigl_tf2` is the MLP recipe of the authors' TF2
trainer). The variants:

  dense                 the full model (once per seed)
  small_dense           a narrower dense model with the sparse kernel-weight
                        count (once per seed and sparsity)
  static, snip, set, snfs, rigl, pruning
                        at every sparsity, uniform and ERK
                        (rigl: grow scores from a separate pass over a training
                        batch, `grow_scores="data"`, the setting of every run
                        recorded before the in-step update existed)
  rigl_step             RigL with the update inside the train step, grow
                        scores from the step's own gradient (the default of
                        RigLScheduler and train.py now)
  rigl_redistribution   RigL whose layer counts follow the momentum
  rigl_min_fan_in       RigL that keeps >= 1 input per unit
  rigl_2x               RigL trained twice as long (--training_steps_multiplier 2)

With --equal_flops (default on) every ERK cell gets a twin at the ERK
sparsity whose inference FLOPs equal the uniform model's at that sparsity
(`kr.sparsity_for_flops`), written "erk=flops": equal parameters favour ERK
on convolutional nets, where its denser early layers cost more FLOPs (on an
MLP every weight costs the same, so the two comparisons nearly coincide).

Each finished run is appended as one JSON line to --runs, so an interrupted
benchmark resumes where it stopped, and `--shard=K/N` splits the runs over N
processes (one per core). The table (test accuracy mean +- std over seeds,
FLOPs relative to dense, units left without any input) is printed and written
as markdown with the exact command to --output.

  python benchmarks/quality_fashion_mnist.py --epochs=5          # full grid
  python benchmarks/quality_fashion_mnist.py --config=fashion_mnist_mlp_rigl_tf2 \
      --variants=static,set,rigl --sparsities=0.98               # authors' MLP recipe
  python benchmarks/quality_fashion_mnist.py --epochs=1 --seeds=0 \
      --sparsities=0.9 --variants=dense,rigl                     # a quick check

Runs are built with examples/train.py's building blocks (one in-process run
each), so its flags also apply here (--config, --model, --epochs, --batch_size,
--update_freq, --drop_fraction, --data_dir...).
"""

import os
import sys

if __package__ in (None, ""):
  # `python benchmarks/quality_fashion_mnist.py`: make the repo importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import collections
import dataclasses
import gc
import json
import platform
import shlex
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras, FLAVOUR
from keras_rigl.recipes import builders
from examples import configs
from examples import train
# pylint: enable=g-import-not-at-top,wrong-import-position

# name -> (Config field overrides, training_steps_multiplier). A variant
# whose method or fields this version of keras_rigl lacks is unavailable.
VARIANTS = collections.OrderedDict([
    ("dense", (dict(method="dense"), 1.0)),
    ("small_dense", (dict(method="small_dense"), 1.0)),
    ("static", (dict(method="static"), 1.0)),
    ("snip", (dict(method="snip"), 1.0)),
    ("set", (dict(method="set"), 1.0)),
    ("snfs", (dict(method="snfs"), 1.0)),
    ("rigl", (dict(method="rigl", grow_scores="data"), 1.0)),
    ("rigl_step", (dict(method="rigl", grow_scores="step"), 1.0)),
    ("rigl_redistribution", (dict(method="rigl", redistribution="momentum"), 1.0)),
    ("rigl_min_fan_in", (dict(method="rigl", min_fan_in=1, grow_scores="data"), 1.0)),
    ("rigl_2x", (dict(method="rigl", grow_scores="data"), 2.0)),
    ("pruning", (dict(method="pruning"), 1.0)),
    # Diagnostics, only when asked for: RigL without the update at step 0
    # (the authors' TF2 trainer first updates after update_freq steps).
    ("rigl_no_step0_update", (dict(method="rigl", begin_step=1, grow_scores="data"), 1.0)),
])
DIAGNOSTICS = ("rigl_no_step0_update",)
EQUAL_FLOPS = "erk=flops"

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each cell runs once per seed.")
flags.DEFINE_list("sparsities", ["0.9", "0.95", "0.98"], "Sparsities to compare.")
flags.DEFINE_list("variants", None, "Variants to compare (default: every available "
                  f"one of {list(VARIANTS)}).")
flags.DEFINE_list("distributions", ["uniform", "erk"], "Layer-wise sparsity "
                  "distributions of the sparse variants.")
flags.DEFINE_bool("equal_flops", True, "Add ERK at the uniform model's inference FLOPs.")
flags.DEFINE_string("runs", None, "JSON-lines file of finished runs (default: "
                    "results/quality_runs_<config>_<model>.jsonl beside --output).")
flags.DEFINE_string("shard", "0/1", "K/N: run every N-th pending run, starting at K.")
flags.DEFINE_bool("table_only", False, "Only write the table from the runs file.")
flags.DEFINE_string("output", None, "Markdown file for the table (default: "
                    "benchmarks/results/quality_<config>_<model>.md).")

Key = collections.namedtuple("Key", "variant sparsity distribution")


def available_variants():
  """Variants whose method and Config fields exist in this keras_rigl."""
  fields = {f.name for f in dataclasses.fields(configs.Config)}
  return [name for name, (changes, _) in VARIANTS.items()
          if changes["method"] in configs.METHODS and set(changes) <= fields]


def grid(variants, sparsities, distributions, equal_flops=False):
  """The (variant, sparsity, distribution) cells, in table order.

  dense depends on neither sparsity nor distribution, small_dense not on the
  distribution: they get one cell (per sparsity) with "-".

  Example:
  >>> grid(["dense", "rigl"], [0.9], ["uniform", "erk"], equal_flops=True)[1:]
  [Key(variant='rigl', sparsity=0.9, distribution='uniform'), Key(variant='rigl', sparsity=0.9, distribution='erk'), Key(variant='rigl', sparsity=0.9, distribution='erk=flops')]
  """
  cells = []
  for variant in VARIANTS:
    if variant not in variants:
      continue
    if variant == "dense":
      cells.append(Key(variant, 0.0, "-"))
    elif variant == "small_dense":
      cells.extend(Key(variant, s, "-") for s in sparsities)
    else:
      for s in sparsities:
        for d in distributions:
          cells.append(Key(variant, s, d))
          if d == "erk" and equal_flops and "uniform" in distributions:
            cells.append(Key(variant, s, EQUAL_FLOPS))
  return cells


def equal_flops_sparsity(base, sparsity, input_shape, num_classes):
  """The ERK sparsity whose inference FLOPs equal uniform's at `sparsity`."""
  model = builders.build_model(base.model, input_shape, num_classes)
  uniform = base.replace(distribution="uniform", sparsity=sparsity)
  sparse = kr.sparsify(model, sparsity, **builders.sparsify_kwargs(uniform, model))
  ratio = kr.count_flops(sparse).ratio
  erk = base.replace(distribution="erk")
  kwargs = builders.sparsify_kwargs(erk, model)
  kwargs.pop("distribution")
  return kr.sparsity_for_flops(model, ratio, distribution="erk", **kwargs)


def units_without_inputs(report):
  """[(weight name, units without inputs, units)] of a sparse run's report.

  The training report's per-layer rows (`kr.sparsity_report`); a dense run
  (nothing sparse) has none.
  """
  if not report["sparsity"]["total"]:
    return []
  return [(f"{r['name']}/{r['weight']}", r["dead_units"], r["units"])
          for r in report["sparsity"]["layers"]]


def run_cell(base, options, key, seed, sparsity):
  """One training run; returns its JSON-friendly record."""
  changes, multiplier = VARIANTS[key.variant]
  distribution = {"-": base.distribution, EQUAL_FLOPS: "erk"}.get(key.distribution,
                                                                  key.distribution)
  config = dataclasses.replace(base, sparsity=sparsity or base.sparsity,
                               distribution=distribution, **changes)
  options = dataclasses.replace(options, seed=seed, training_steps_multiplier=multiplier)
  keras.backend.clear_session()
  gc.collect()
  started = time.time()
  report = train.run(config, options)
  return {"variant": key.variant, "sparsity": key.sparsity,
          "distribution": key.distribution, "seed": seed,
          "actual_sparsity": report["sparsity"]["total"],
          "accuracy": report["test"]["accuracy"],
          "training_flops": report["flops"]["training_ratio"],
          "inference_flops": report["flops"]["inference_ratio"],
          "dead_units": units_without_inputs(report),
          "seconds": round(time.time() - started, 1), "flavour": FLAVOUR}


def mean_std(values):
  values = np.asarray(values, np.float64)
  return values.mean(), (values.std(ddof=1) if len(values) > 1 else 0.0)


def table(cells, records):
  """Markdown table of the cells that have runs.

  Example:
  >>> key = Key("rigl", 0.9, "erk")
  >>> rec = dict(variant="rigl", sparsity=0.9, distribution="erk", accuracy=0.8,
  ...            training_flops=0.1, inference_flops=0.1, actual_sparsity=0.9,
  ...            dead_units=[["fc1/kernel", 3, 300]])
  >>> print(table([key], [rec]).splitlines()[-1])
  | rigl | 90% | erk | 80.00 ± 0.00 | 1 | 0.100x | 0.100x | 3 of 300 | 3 |
  """
  lines = ["| variant | sparsity | distribution | test accuracy (%) | seeds | "
           "training FLOPs | inference FLOPs | first layer: units without inputs | "
           "all layers: units without inputs |",
           "|---|---|---|---|---|---|---|---|---|"]
  for key in cells:
    runs = [r for r in records if Key(r["variant"], r["sparsity"], r["distribution"]) == key]
    if not runs:
      continue
    mean, std = mean_std([r["accuracy"] for r in runs])
    sparsity = "-" if key.variant == "dense" else f"{key.sparsity:.0%}"
    if key.distribution == EQUAL_FLOPS:
      sparsity += f" (ERK {np.mean([r['actual_sparsity'] for r in runs]):.1%})"
    dead = [r["dead_units"] for r in runs]
    first = "-"
    total = "-"
    if dead and dead[0]:
      first = f"{np.mean([d[0][1] for d in dead]):.3g} of {dead[0][0][2]}"
      total = f"{np.mean([sum(row[1] for row in d) for d in dead]):.3g}"
    lines.append(f"| {key.variant} | {sparsity} | {key.distribution} | "
                 f"{100 * mean:.2f} ± {100 * std:.2f} | {len(runs)} | "
                 f"{np.mean([r['training_flops'] for r in runs]):.3f}x | "
                 f"{np.mean([r['inference_flops'] for r in runs]):.3f}x | {first} | {total} |")
  return "\n".join(lines)


def command():
  """The command line of this run, as it would be typed from the repo root."""
  script = os.path.relpath(os.path.abspath(sys.argv[0]))
  return " ".join(["python", shlex.quote(script)] + [shlex.quote(a) for a in sys.argv[1:]])


def _read_runs(path):
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _budget(base):
  length = (f"{base.epochs:g} epochs" if base.train_steps is None
            else f"{base.train_steps} steps")
  if base.lr_schedule == "cosine":
    lr = f"lr {base.peak_learning_rate()} with cosine decay to 0"
  else:
    lr = (f"lr {base.peak_learning_rate()} x{base.lr_decay} at "
          f"{', '.join(map(str, base.lr_boundaries))} ({base.lr_unit})")
  momentum = f"{'Nesterov ' if base.nesterov else ''}momentum {base.momentum}"
  return (f"{length} at batch {base.batch_size}, SGD ({momentum}), {lr}, weight decay "
          f"{base.weight_decay:g} (wd/2 * sum w^2); mask updates every {base.update_freq} "
          f"steps (drop fraction {base.drop_fraction}, {base.drop_fraction_schedule}) until "
          f"{base.end_step if base.end_step is not None else f'{base.end_fraction:.0%} of the run'}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  available = available_variants()
  variants = FLAGS.variants or [v for v in available if v not in DIAGNOSTICS]
  unknown = [v for v in variants if v not in available]
  if unknown:
    raise app.UsageError(f"Unavailable variants {unknown}; this keras_rigl has {available}.")
  base, options = train.setup_from_flags(FLAGS)
  name = f"{options.config_name}_{base.model}"
  results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
  runs_path = FLAGS.runs or os.path.join(results, f"quality_runs_{name}.jsonl")
  output = FLAGS.output or os.path.join(results, f"quality_{name}.md")
  # Only the final test accuracy matters: no files, no evaluation per epoch.
  base = dataclasses.replace(base, eval_every=10**6)
  options = dataclasses.replace(options, write_files=False, print_report=False,
                                verbose=0, export_dir=None)
  seeds = [int(s) for s in FLAGS.seeds]
  cells = grid(variants, [float(s) for s in FLAGS.sparsities], FLAGS.distributions,
               FLAGS.equal_flops)
  done = {(r["variant"], r["sparsity"], r["distribution"], r["seed"])
          for r in _read_runs(runs_path)}
  pending = [(key, seed) for seed in seeds for key in cells
             if (key.variant, key.sparsity, key.distribution, seed) not in done]
  shard, shards = (int(part) for part in FLAGS.shard.split("/"))
  mine = pending[shard::shards] if not FLAGS.table_only else []
  info = kr.data.dataset_info(base.dataset)
  started = time.time()
  logging.info("%d runs pending, %d in this shard; runs file %s", len(pending),
               len(mine), runs_path)
  for i, (key, seed) in enumerate(mine):
    sparsity = key.sparsity
    if key.distribution == EQUAL_FLOPS:
      sparsity = equal_flops_sparsity(base, key.sparsity, info.input_shape, info.num_classes)
    record = run_cell(base, options, key, seed, sparsity)
    with open(runs_path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
    logging.info("[%d/%d] %s seed %d: test accuracy %.4f (%.0f s; %.0f s so far)",
                 i + 1, len(mine), "/".join(map(str, key)), seed, record["accuracy"],
                 record["seconds"], time.time() - started)
  records = [r for r in _read_runs(runs_path) if r["seed"] in seeds]
  text = table(cells, records)
  print(text)
  seconds = sum(r["seconds"] for r in records)
  header = [
      f"# Fashion-MNIST, {base.model}: test accuracy of sparse training methods",
      "",
      f"Command: `{command()}` (config `{options.config_name}`; runs in "
      f"`{os.path.relpath(runs_path)}`)",
      "",
      f"Budget: {_budget(base)}. Seeds {', '.join(map(str, seeds))}; mean ± sample std "
      "over seeds. FLOPs are relative to the dense model (paper's Appendix H counting). "
      "Units without inputs: output units of a sparse layer whose every input "
      "connection is masked, at the end of training (mean over seeds).",
      "",
      f"Environment: {FLAVOUR}, TensorFlow {tf.__version__}, {platform.machine()} with "
      f"{os.cpu_count()} CPUs; {len(records)} runs, {seconds / 60:.0f} min of training "
      "in all.",
      "",
  ]
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "w", encoding="utf-8") as f:
    f.write("\n".join(header) + "\n" + text + "\n")
  logging.info("Wrote %s", output)


if __name__ == "__main__":
  app.run(main)
