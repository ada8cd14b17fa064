r"""Held-out bits per character of sparse training methods: character LMs.

The RigL paper's second experiment (section 4.2, a character-level GRU on
WikiText-103) at a size two CPU cores finish in about 20 minutes: every
method trains the same number of steps on the same data (the `fortunes`
corpus, `make corpus`), 75% uniform sparsity as in the paper, Adam 7e-4,
mask updates until the end with drop fraction 0.1 (cosine), pruning from 25%
to 75% of the run. Two models:

  gru          Embedding 128 -> GRU --gru_units -> Dense --readout -> 256
               logits (the paper's shape; the GRU is narrower than its 512
               and the sequences shorter, to fit the budget)
  transformer  2 pre-norm blocks of causal MultiHeadAttention (d_model 128,
               4 heads) and a Dense 512 feed-forward

examples/train_lm.py's flags apply (--train_steps, --gru_units, --sparsity,
--distribution, --data_dir...), with the benchmark's defaults above.

Methods: dense, small_dense (dense with the sparse kernel-weight count),
static, set, rigl, pruning; each once per seed. The table gives held-out
bits per character (mean +- std over seeds), training FLOPs relative to the
dense run, and inference FLOPs per character. Printed, and written as
markdown with the exact command to benchmarks/results/quality_char_lm.md.

  python benchmarks/quality_char_lm.py                       # ~20 min, 24 runs
  python benchmarks/quality_char_lm.py --models=gru --seeds=0 \
      --methods=dense,rigl --train_steps=100                 # a quick check
"""

import os
import sys

if __package__ in (None, ""):
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
import numpy as np

from keras_rigl._keras import FLAVOUR
from examples import train_lm
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
train_lm.define_flags()
flags.DEFINE_list("models", ["gru", "transformer"], "Models to compare.")
flags.DEFINE_list("methods", ["dense", "small_dense", "static", "set", "rigl", "pruning"],
                  "Methods to compare (any of examples/train_lm.py's --method).")
flags.DEFINE_list("seeds", ["0", "1"], "Seeds; each (model, method) runs once per seed.")
# examples/train_lm.py's flags apply too; the benchmark's own defaults:
BENCHMARK_DEFAULTS = {"train_steps": 1000, "steps_per_epoch": 1000, "update_freq": 50,
                      "gru_units": 256, "readout": ["128", "64"],
                      "sequence_length": 32, "batch_size": 32, "verbose": "0"}
for _name, _value in BENCHMARK_DEFAULTS.items():
  FLAGS.set_default(_name, _value)
flags.DEFINE_string("output", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "quality_char_lm.md"),
                    "Markdown file for the table ('' to skip).")


def config_for(model, method, seed):
  base = train_lm.config_from_flags()
  return dataclasses.replace(base, model=model, method=method, seed=seed,
                             steps_per_epoch=base.train_steps)


def _mean_std(values):
  values = np.asarray(values, dtype=float)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def table(results):
  """Markdown table: one row per (model, method)."""
  lines = ["| model | method | held-out bits/char | train FLOPs (x dense) | "
           "inference FLOPs/char | non-zero kernel weights | s/run |",
           "|---|---|---|---|---|---|---|"]
  for model in FLAGS.models:
    dense = results.get((model, "dense"))
    dense_flops = np.mean([r["training_flops"] for r in dense]) if dense else None
    for method in FLAGS.methods:
      runs = results.get((model, method))
      if not runs:
        continue
      mean, std = _mean_std([r["held_out_bpc"] for r in runs])
      flops = np.mean([r["training_flops"] for r in runs])
      ratio = f"{flops / dense_flops:.3f}" if dense_flops else f"{flops:.3g}"
      per_char = np.mean([r["flops"]["per_character"] for r in runs])
      nnz = int(np.mean([r["sparse_layers"]["nnz"] for r in runs]))
      seconds = np.mean([r["seconds"] for r in runs])
      lines.append(f"| {model} | {method} | {mean:.4f} +- {std:.4f} | {ratio} | "
                   f"{per_char / 1e3:,.1f} K | {nnz:,} | {seconds:.0f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  for model in FLAGS.models:
    if model not in train_lm.MODELS:
      raise app.UsageError(f"--models: unknown {model!r}; use {train_lm.MODELS}.")
  for method in FLAGS.methods:
    if method not in train_lm.methods():
      raise app.UsageError(f"--methods: unknown {method!r}; use {train_lm.methods()}.")
  configs = [config_for(m, method, int(s)) for m in FLAGS.models
             for method in FLAGS.methods for s in FLAGS.seeds]
  for config in configs:
    config.check()  # Every bad value before the first run.
  train_lm.load_corpus(configs[0])
  started = time.time()
  results = collections.defaultdict(list)
  for config in configs:
    report = train_lm.run(config)
    results[(config.model, config.method)].append(report)
    print(f"{config.model:12s} {config.method:12s} seed {config.seed}: "
          f"{report['held_out_bpc']:.4f} bits/char, {report['seconds']:.0f} s", flush=True)
    gc.collect()
  minutes = (time.time() - started) / 60
  command = "python benchmarks/quality_char_lm.py " + " ".join(
      shlex.quote(a) for a in sys.argv[1:])
  text = table(results)
  example = configs[0]
  header = (
      f"# Character LM quality (held-out bits per character)\n\n"
      f"`{command.strip()}`\n\n"
      f"Keras flavour {FLAVOUR}, {platform.processor() or platform.machine()}, "
      f"{os.cpu_count()} CPUs, {minutes:.1f} min total. {FLAGS.train_steps} steps of "
      f"{example.batch_size} x {example.sequence_length} bytes, sparsity "
      f"{example.sparsity} ({example.distribution}), update every {example.update_freq} "
      f"steps, seeds {','.join(FLAGS.seeds)}; GRU {example.gru_units} units, readout "
      f"{','.join(map(str, example.readout))}; Transformer d_model {example.d_model}, "
      f"{example.num_layers} blocks, {example.num_heads} heads, ff {example.ff_dim}.\n\n")
  print()
  print(header + text)
  if FLAGS.output:
    os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    with open(FLAGS.output, "w") as f:
      f.write(header + text + "\n")


if __name__ == "__main__":
  app.run(main)
