r"""Test accuracy of sparse training methods: LeNet-300-100 on Fashion-MNIST.

Every method gets the same budget (the `fashion_mnist_lenet300_100` setup of
examples/configs.py: batch 128, SGD with Nesterov momentum, lr 0.1 x0.1 at
half and at three quarters of the run, 10 epochs unless --epochs says
otherwise):

  dense        the full model (once per seed)
  small_dense  a narrower dense model with the sparse kernel-weight count
               (once per seed and sparsity)
  static, set, rigl, pruning
               at every sparsity, with the uniform and ERK distributions

and the table gives test accuracy (mean +- std over seeds) with training and
inference FLOPs relative to dense. It is printed and written as markdown,
with the exact command, to benchmarks/results/quality_fashion_mnist.md.

  python benchmarks/quality_fashion_mnist.py      # the full grid: 84 runs
  python benchmarks/quality_fashion_mnist.py --epochs=1 --seeds=0 \
      --sparsities=0.9 --methods=dense,rigl        # a quick check

Runs are built with examples/train.py's building blocks (one in-process run
each), so its flags also apply here (--epochs, --batch_size, --update_freq,
--drop_fraction, --strategy, --data_dir...).
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
import platform
import shlex
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from keras_rigl._keras import keras, FLAVOUR
from examples import configs
from examples import train
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each (method, sparsity, "
                  "distribution) runs once per seed.")
flags.DEFINE_list("sparsities", ["0.9", "0.95", "0.98"], "Sparsities to compare.")
flags.DEFINE_list("methods", list(configs.METHODS), "Methods to compare.")
flags.DEFINE_list("distributions", ["uniform", "erk"], "Layer-wise sparsity "
                  "distributions of the sparse methods.")
flags.DEFINE_string("output", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "quality_fashion_mnist.md"),
    "Markdown file for the table.")

Key = collections.namedtuple("Key", "method sparsity distribution")


def grid(methods, sparsities, distributions):
  """The (method, sparsity, distribution) cells, in table order.

  dense depends on neither sparsity nor distribution, small_dense not on the
  distribution: they get one cell (per sparsity) with "-".

  Example:
  >>> grid(["dense", "rigl"], [0.9], ["erk"])
  [Key(method='dense', sparsity=0.0, distribution='-'), Key(method='rigl', sparsity=0.9, distribution='erk')]
  """
  cells = []
  for method in configs.METHODS:
    if method not in methods:
      continue
    if method == "dense":
      cells.append(Key(method, 0.0, "-"))
    elif method == "small_dense":
      cells.extend(Key(method, s, "-") for s in sparsities)
    else:
      cells.extend(Key(method, s, d) for s in sparsities for d in distributions)
  return cells


def run_cell(base, options, key, seed):
  """One training run; returns (test accuracy, report)."""
  config = dataclasses.replace(
      base, method=key.method, sparsity=key.sparsity or base.sparsity,
      distribution=key.distribution if key.distribution != "-" else base.distribution)
  options = dataclasses.replace(options, seed=seed)
  keras.backend.clear_session()
  gc.collect()
  report = train.run(config, options)
  return report["test"]["accuracy"], report


def mean_std(values):
  values = np.asarray(values, np.float64)
  return values.mean(), (values.std(ddof=1) if len(values) > 1 else 0.0)


def table(results, flops):
  """Markdown table: accuracy mean +- std, FLOPs relative to dense."""
  lines = ["| method | sparsity | distribution | test accuracy (%) | seeds | "
           "training FLOPs | inference FLOPs |",
           "|---|---|---|---|---|---|---|"]
  for key, accuracies in results.items():
    mean, std = mean_std(accuracies)
    train_ratio, inference_ratio = flops[key]
    sparsity = "-" if key.method == "dense" else f"{key.sparsity:.0%}"
    lines.append(f"| {key.method} | {sparsity} | {key.distribution} | "
                 f"{100 * mean:.2f} ± {100 * std:.2f} | {len(accuracies)} | "
                 f"{train_ratio:.3f}x | {inference_ratio:.3f}x |")
  return "\n".join(lines)


def command():
  """The command line of this run, as it would be typed from the repo root."""
  script = os.path.relpath(os.path.abspath(sys.argv[0]))
  return " ".join(["python", shlex.quote(script)] + [shlex.quote(a) for a in sys.argv[1:]])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = sorted(set(FLAGS.methods) - set(configs.METHODS))
  if unknown:
    raise app.UsageError(f"Unknown methods {unknown}; use {configs.METHODS}.")
  base, options = train.setup_from_flags(FLAGS)
  if base.dataset != "fashion_mnist" or base.model != "lenet300_100":
    logging.warning("Benchmarking %s on %s (not LeNet-300-100 / Fashion-MNIST).",
                    base.model, base.dataset)
  # Only the final test accuracy matters: no files, no evaluation per epoch.
  base = dataclasses.replace(base, eval_every=10**6)
  options = dataclasses.replace(options, write_files=False, print_report=False,
                                verbose=0, export_dir=None)
  seeds = [int(s) for s in FLAGS.seeds]
  cells = grid(FLAGS.methods, [float(s) for s in FLAGS.sparsities], FLAGS.distributions)
  results = collections.OrderedDict((key, []) for key in cells)
  flops = {}
  started = time.time()
  total = len(cells) * len(seeds)
  done = 0
  for seed in seeds:
    for key in cells:
      t0 = time.time()
      accuracy, report = run_cell(base, options, key, seed)
      results[key].append(accuracy)
      flops[key] = (report["flops"]["training_ratio"], report["flops"]["inference_ratio"])
      done += 1
      logging.info("[%d/%d] %s seed %d: test accuracy %.4f (%.0f s; %.0f s so far)",
                   done, total, "/".join(map(str, key)), seed, accuracy,
                   time.time() - t0, time.time() - started)
  text = table(results, flops)
  print(text)
  epochs = base.epochs if base.train_steps is None else None
  length = f"{epochs:g} epochs" if epochs else f"{base.train_steps} steps"
  header = [
      "# Fashion-MNIST, LeNet-300-100: test accuracy of sparse training methods",
      "",
      f"Command: `{command()}`",
      "",
      f"Budget: {length} at batch {base.batch_size}, SGD (Nesterov momentum "
      f"{base.momentum}) with lr {base.peak_learning_rate()} x{base.lr_decay} at "
      f"{', '.join(f'{b:.0%}' for b in base.lr_boundaries)} of the run; mask updates every "
      f"{base.update_freq} steps (drop fraction {base.drop_fraction}, "
      f"{base.drop_fraction_schedule}) until {base.end_fraction:.0%} of the run; pruning "
      f"from {base.pruning_begin_fraction:.0%} to {base.pruning_end_fraction:.0%}. "
      f"Seeds {', '.join(map(str, seeds))}; mean ± sample std over seeds. FLOPs are "
      "relative to the dense model (paper's Appendix H counting).",
      "",
      f"Environment: {FLAVOUR}, TensorFlow {tf.__version__}, {platform.machine()} with "
      f"{os.cpu_count()} CPUs; {time.time() - started:.0f} s for {total} runs.",
      "",
  ]
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "w", encoding="utf-8") as f:
    f.write("\n".join(header) + "\n" + text + "\n")
  logging.info("Wrote %s", FLAGS.output)


if __name__ == "__main__":
  app.run(main)
