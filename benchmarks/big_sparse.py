r"""A network whose dense form does not fit this machine, trained sparse with RigL.

MLP 784 -> H -> H -> 10 on Fashion-MNIST (H = 32768 by default: 1.1 billion
potential connections, 4.4 GB of dense float32 weights, ~18 GB with Adam and
gradients) at 99.9% ERK sparsity in compressed storage
(`keras_rigl.layers.SparseDense`, built directly: the dense model never
exists), trained with RigL (SGD + Nesterov momentum, drop fraction 0.3
cosine, update every 100 steps, batch 128). Prints test accuracy, peak RSS,
seconds per training step and per mask update.

Each sparse layer starts from a normal distribution scaled by its *sparse*
fan-in (he_normal with scale 2 / density): with the dense fan-in a 99.9%
sparse layer would shrink the signal a thousandfold.

  python benchmarks/big_sparse.py                       # one epoch (468 steps)
  python benchmarks/big_sparse.py --steps=100           # a shorter run
  python benchmarks/big_sparse.py --compare_lenet       # masked vs compressed
      # accuracy on LeNet-300-100, 90% ERK, RigL (the default Fashion-MNIST run)
"""

import argparse
import os
import sys
import time

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import keras_rigl as kr  # pylint: disable=g-import-not-at-top
from keras_rigl._keras import keras  # pylint: disable=g-import-not-at-top

BATCH = 128
TRAIN_SIZE = 60000


def peak_rss_mib():
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def datasets(seed):
  train = kr.data.load("fashion_mnist", "train", batch_size=BATCH, seed=seed, repeat=True)
  test = kr.data.load("fashion_mnist", "test", batch_size=1000)
  return train, test


def big_model(width, sparsity, seed):
  dims = [784, width, width, 10]
  names = ["fc1", "fc2", "logits"]
  shapes = {n: (a, b) for n, a, b in zip(names, dims[:-1], dims[1:])}
  per_layer = kr.layer_sparsities(shapes, sparsity, "erk")
  layers = [keras.Input((28, 28, 1)), keras.layers.Flatten()]
  for i, name in enumerate(names):
    density = 1.0 - per_layer[name]
    init = keras.initializers.VarianceScaling(2.0 / density, "fan_in", "truncated_normal",
                                              seed=seed + i)
    layers.append(kr.layers.SparseDense(
        dims[i + 1], per_layer[name], activation="relu" if i < 2 else None,
        kernel_initializer=init, seed=seed, name=name))
  return keras.Sequential(layers), per_layer


class _Timer(keras.callbacks.Callback):
  """Wall time of each training step (its batch-begin runs after RigL's)."""

  def __init__(self):
    super().__init__()
    self.steps = []

  def on_train_batch_begin(self, batch, logs=None):
    self._start = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    self.steps.append(time.perf_counter() - self._start)
    if len(self.steps) % 25 == 0:
      print(f"  step {len(self.steps)}: median {np.median(self.steps):.3f} s, peak RSS "
            f"{peak_rss_mib():,.0f} MiB", file=sys.stderr, flush=True)


def _optimizer(total_steps, lr=0.1):
  schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
      [int(0.5 * total_steps), int(0.75 * total_steps)], [lr, lr * 0.1, lr * 0.01])
  return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)


def train(model, steps, seed, update_freq=100, timer=True):
  train_ds, test_ds = datasets(seed)
  model.compile(_optimizer(steps), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  # The step timer's batch-begin runs after RigL's, so it times the train
  # step only; the update itself is timed around RigL's hook.
  rigl = kr.RigLScheduler(train_ds, update_freq=update_freq, drop_fraction=0.3,
                          end_step=int(0.75 * steps), seed=seed)
  update_times = []
  original = rigl.on_train_batch_begin

  def timed(batch, logs=None):
    before, start = rigl.updates, time.perf_counter()
    original(batch, logs)
    if rigl.updates > before:
      update_times.append(time.perf_counter() - start)
      print(f"  update at step {rigl.last_update_step}: {update_times[-1]:.1f} s",
            file=sys.stderr, flush=True)
  rigl.on_train_batch_begin = timed
  step_timer = _Timer()
  start = time.perf_counter()
  model.fit(train_ds, epochs=1, steps_per_epoch=steps, verbose=0,
            callbacks=[rigl, step_timer] if timer else [rigl])
  wall = time.perf_counter() - start
  _, accuracy = model.evaluate(test_ds, verbose=0)
  return accuracy, wall, step_timer.steps, update_times


def _commit():
  import subprocess  # pylint: disable=g-import-not-at-top
  try:
    return subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse",
                           "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def run_big(args):
  load = os.getloadavg()
  model, per_layer = big_model(args.width, args.sparsity, args.seed)
  print(f"# big_sparse: MLP 784-{args.width}-{args.width}-10, {args.sparsity} ERK, "
        f"compressed, RigL; {args.steps} steps of batch {BATCH} "
        f"({args.steps * BATCH / TRAIN_SIZE:.2f} epochs); load {load[0]:.2f}; code {_commit()}")
  print(kr.sparsity_report(model))
  dense_params = 784 * args.width + args.width * args.width + args.width * 10
  accuracy, wall, steps, updates = train(model, args.steps, args.seed, args.update_freq)
  print("\n| H | sparsity | potential connections | stored | steps | test accuracy | "
        "peak RSS MiB | s / step (median) | s / mask update (median) | updates | wall s |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  print(f"| {args.width} | {args.sparsity} | {dense_params:,} | "
        f"{kr.sparsity_report(model).nnz:,} | {args.steps} | {accuracy:.4f} | "
        f"{peak_rss_mib():,.0f} | {np.median(steps[1:] or steps):.3f} | "
        f"{np.median(updates) if updates else float('nan'):.2f} | {len(updates)} | "
        f"{wall:.0f} |")
  print(f"(load average after: {os.getloadavg()[0]:.2f})")


def run_compare(args):
  steps = args.epochs * (TRAIN_SIZE // BATCH)
  print(f"# LeNet-300-100, 90% ERK, RigL, {args.epochs} epochs ({steps} steps), "
        f"seeds {args.seeds}; load {os.getloadavg()[0]:.2f}\n")
  print("| storage | seed | test accuracy | wall s |")
  print("|---|---:|---:|---:|")
  results = {"masked": [], "compressed": []}
  for seed in args.seeds:
    for storage in ("masked", "compressed"):
      keras.utils.set_random_seed(seed)
      model = kr.sparsify(kr.models.lenet300_100(), 0.9, "erk", seed=seed, storage=storage)
      keras.utils.set_random_seed(seed)
      accuracy, wall, _, _ = train(model, steps, seed, timer=False)
      results[storage].append(accuracy)
      print(f"| {storage} | {seed} | {accuracy:.4f} | {wall:.0f} |", flush=True)
  for storage, values in results.items():
    print(f"| {storage} | mean +- std | {np.mean(values):.4f} +- {np.std(values):.4f} | |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--width", type=int, default=32768)
  parser.add_argument("--sparsity", type=float, default=0.999)
  parser.add_argument("--steps", type=int, default=TRAIN_SIZE // BATCH)
  parser.add_argument("--update_freq", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--compare_lenet", action="store_true")
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1])
  args = parser.parse_args()
  if args.compare_lenet:
    run_compare(args)
  else:
    run_big(args)


if __name__ == "__main__":
  main()
