"""Epoch time of sparse training against the same dense model (LeNet-300-100).

Variants, each trained in one `fit` on Fashion-MNIST (batch 128, 468 steps an
epoch); the first epoch (tracing) is dropped; the table shows the median and the minimum of the
rest, and the median CPU time of the process (this VM's wall-clock epoch
times vary by +-20%; the minimum and the CPU time are steadier estimates of
the intrinsic cost):

  dense    the plain model
  static   sparsify(90% ERK), no scheduler: the cost of SparseWrapper itself
  rigl     static + RigLScheduler(update_freq=100), updates in every epoch,
           inside the train step, grow scores from the step's gradient (default)
  rigl_data  the same with RigLScheduler(train, ...): the host-scheduled update
           with a separate forward/backward pass (rigl_tf2's behaviour)
  idle     static + a RigLScheduler whose window is never reached: the
           in-step update's cost between updates
  set      static + SETScheduler(update_freq=100)
  tfmot    tfmot.prune_low_magnitude at 90% (tf_keras flavour only)

Runs on Keras 3's JAX backend too (KERAS_BACKEND=jax: the input stays a
tf.data pipeline on the host, which Keras's JAX trainer reads as numpy).

Variants run twice in mirrored order (dense, static, ..., static, dense) so
that drift in machine speed cancels out. Ratios are over dense in this run.

--fit_calls: "one" trains each variant in one `fit(epochs=N)`; "per_epoch"
calls `fit(epochs=e + 1, initial_epoch=e)` once per epoch (a common loop; the
schedulers must not pay their start-up again per call) and times each whole
`fit` call; "both" (default) prints both tables.

  python benchmarks/epoch_time.py [--epochs 4] [--variants dense,static,rigl]
      [--fit_calls one|per_epoch|both] [--threads 1] [--jit_compile]
      [--input tf_data|numpy]
"""

import gc
import statistics
import time

import numpy as np
from absl import app, flags

import tensorflow as tf

import keras_rigl as kr
from keras_rigl import data as kr_data
from keras_rigl._keras import keras, FLAVOUR

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 8, "Epochs per fit (the first one is not timed).")
flags.DEFINE_list("variants", ["dense", "static", "idle", "rigl", "rigl_data", "set", "tfmot"],
                  "What to time.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("sparsity", 0.9, "Sparsity of the sparse variants.")
flags.DEFINE_integer("threads", 0, "TensorFlow intra- and inter-op threads (0: TF's "
                     "default). 1 gives steadier ratios on a shared machine.")
flags.DEFINE_bool("jit_compile", False, "compile(jit_compile=True): every variant's "
                  "train step compiled by XLA (default: each flavour's own default, which "
                  "is XLA on JAX).")
flags.DEFINE_enum("input", "tf_data", ["tf_data", "numpy"],
                  "What fit reads: the cached tf.data pipeline, or the same batches as "
                  "numpy arrays (fit(x, y, shuffle=False): no tf.data in the loop, "
                  "so the step's own cost shows more clearly on JAX).")
flags.DEFINE_enum("fit_calls", "both", ["one", "per_epoch", "both"],
                  "One fit for all epochs, one fit per epoch, or both.")


class EpochTimer(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.times = []
    self.cpu = []

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()
    self._cpu = time.process_time()

  def on_epoch_end(self, epoch, logs=None):
    self.times.append(time.perf_counter() - self._start)
    self.cpu.append(time.process_time() - self._cpu)


def build(variant, train, steps):
  keras.utils.set_random_seed(0)
  model = kr.models.lenet300_100()
  callbacks = []
  if variant == "tfmot":
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    schedule = tfmot.sparsity.keras.ConstantSparsity(FLAGS.sparsity, 0, frequency=100)
    model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
  elif variant != "dense":
    model = kr.sparsify(model, FLAGS.sparsity, "erk")
    if variant == "rigl":
      callbacks.append(kr.RigLScheduler(update_freq=100, end_step=steps))
    elif variant == "rigl_data":
      callbacks.append(kr.RigLScheduler(train, update_freq=100, end_step=steps))
    elif variant == "idle":
      callbacks.append(kr.RigLScheduler(update_freq=100, begin_step=10 ** 9,
                                        end_step=10 ** 9))
    elif variant == "set":
      callbacks.append(kr.SETScheduler(update_freq=100, end_step=steps))
  model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], **({"jit_compile": True} if FLAGS.jit_compile else {}))
  return model, callbacks


_ARRAYS = {}


def _as_numpy(dataset):
  """The dataset's batches as two numpy arrays, in order (made once)."""
  if "xy" not in _ARRAYS:
    batches = list(dataset.as_numpy_iterator())
    _ARRAYS["xy"] = tuple(np.concatenate(part) for part in zip(*batches))
  return _ARRAYS["xy"]


def train(variant, train_data, steps, per_epoch):
  """(epoch wall times, epoch CPU times, final train accuracy) of one variant."""
  keras.backend.clear_session()  # Earlier models must not slow later ones.
  gc.collect()
  model, callbacks = build(variant, train_data, steps)
  fit_data = dict(x=train_data)
  if FLAGS.input == "numpy":  # The same batches, in the same order every epoch.
    x, y = _as_numpy(train_data)
    fit_data = dict(x=x, y=y, batch_size=FLAGS.batch_size, shuffle=False)
  timer = EpochTimer()
  if not per_epoch:
    history = model.fit(**fit_data, epochs=FLAGS.epochs, verbose=0,
                        callbacks=callbacks + [timer])
    return timer.times, timer.cpu, history.history["accuracy"][-1]
  times, cpu = [], []
  for epoch in range(FLAGS.epochs):
    start, start_cpu = time.perf_counter(), time.process_time()
    history = model.fit(**fit_data, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
                        callbacks=callbacks)
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return times, cpu, history.history["accuracy"][-1]


def table(variants, train_data, steps, per_epoch):
  times = {v: [] for v in variants}
  cpu = {v: [] for v in variants}
  accuracy = {}
  for variant in variants + variants[::-1]:
    epoch_times, epoch_cpu, accuracy[variant] = train(variant, train_data, steps, per_epoch)
    times[variant] += epoch_times[1:]
    cpu[variant] += epoch_cpu[1:]
    print(f"  {variant:7s} epochs {['%.2f' % t for t in epoch_times]}", flush=True)
  base = statistics.median(times["dense"]) if "dense" in times else None
  print(f"\nLeNet-300-100, Fashion-MNIST, batch {FLAGS.batch_size}, {FLAVOUR}"
        f"{'' if kr.backend.IS_TENSORFLOW else '/' + kr.backend.NAME}, "
        f"{FLAGS.sparsity:.0%} ERK, {'one fit call per epoch' if per_epoch else 'one fit'}, "
        f"median of {len(times[variants[0]])} epochs")
  best = min(times["dense"]) if "dense" in times else None
  base_cpu = statistics.median(cpu["dense"]) if "dense" in cpu else None
  print(f"{'variant':8s} {'median s':>9s} {'vs dense':>9s} {'min s':>7s} {'vs dense':>9s} "
        f"{'CPU s':>7s} {'vs dense':>9s} {'train acc':>10s}")
  for variant in variants:
    median, low = statistics.median(times[variant]), min(times[variant])
    median_cpu = statistics.median(cpu[variant])
    ratio = f"{median / base:.3f}" if base else "-"
    ratio_min = f"{low / best:.3f}" if best else "-"
    ratio_cpu = f"{median_cpu / base_cpu:.3f}" if base_cpu else "-"
    print(f"{variant:8s} {median:9.3f} {ratio:>9s} {low:7.3f} {ratio_min:>9s} "
          f"{median_cpu:7.3f} {ratio_cpu:>9s} {accuracy[variant]:10.3f}")
  print(flush=True)


def main(_):
  if FLAGS.threads:
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
  variants = list(FLAGS.variants)
  if "tfmot" in variants and FLAVOUR != "tf_keras":
    print("(tfmot needs tf_keras: run with TF_USE_LEGACY_KERAS=1 to include it)")
    variants.remove("tfmot")
  train_data = kr_data.load("fashion_mnist", "train", FLAGS.batch_size, seed=0).cache()
  steps = FLAGS.epochs * int(train_data.cardinality())
  modes = {"one": [False], "per_epoch": [True], "both": [False, True]}[FLAGS.fit_calls]
  for per_epoch in modes:
    table(variants, train_data, steps, per_epoch)


if __name__ == "__main__":
  app.run(main)
