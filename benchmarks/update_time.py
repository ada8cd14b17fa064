"""The cost of one RigL mask update, timed directly: steps with an update minus steps without.

For a model, each variant trains `--steps` steps (after one untimed warm-up
call that traces everything) on a fixed batch of random data:

  none   RigLScheduler() whose window is never reached: the train step with
         the in-step update compiled in but never taken
  step   RigLScheduler(update_freq=1): the update inside every train step,
         grow scores from the step's own gradient (the default)
  host   RigLScheduler(data, update_freq=1): the host-scheduled update with
         its separate forward/backward pass on a batch of `data`
  dense  the dense model (for scale)

One update costs ``(time(variant) - time(none)) / steps``. Variants run in
interleaved rounds, each in a fresh Keras session; the table gives medians
over `--repeats` rounds. The model's step time and ``cost / (100 x step)``
(the overhead at the paper's update_freq=100) are printed beside it.

  python benchmarks/update_time.py --model=lenet300_100 [--steps=50] [--repeats=3]
  python benchmarks/update_time.py --model=resnet50 --image_size=64 --batch_size=8 --steps=10
  TF_USE_LEGACY_KERAS=1 python benchmarks/update_time.py ...   (tf_keras)
"""

import gc
import statistics
import time

from absl import app, flags
import numpy as np
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import FLAVOUR, keras

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "lenet300_100", ["lenet300_100", "resnet50", "mobilenet_v1"],
                  "Architecture.")
flags.DEFINE_list("variants", ["none", "step", "host", "dense"], "What to time.")
flags.DEFINE_integer("steps", 50, "Timed steps per variant and round.")
flags.DEFINE_integer("repeats", 3, "Interleaved rounds.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("image_size", 64, "Image side for the ImageNet models.")
flags.DEFINE_float("sparsity", 0.9, "ERK sparsity.")
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_integer("steps_per_execution", 1, "Keras steps_per_execution.")


def _model():
  if FLAGS.model == "lenet300_100":
    return kr.models.lenet300_100(), (28, 28, 1), 10
  size = FLAGS.image_size
  build = {"resnet50": kr.models.resnet50, "mobilenet_v1": kr.models.mobilenet_v1}
  return build[FLAGS.model](input_shape=(size, size, 3), num_classes=1000), \
      (size, size, 3), 1000


def _data(shape, classes):
  r = np.random.default_rng(0)
  x = r.normal(size=(FLAGS.batch_size,) + shape).astype("float32")
  y = r.integers(0, classes, size=FLAGS.batch_size).astype("int32")
  return tf.data.Dataset.from_tensors((x, y)).repeat()


def run(variant):
  """Seconds for FLAGS.steps steps of `variant` (after a warm-up call)."""
  keras.backend.clear_session()
  gc.collect()
  keras.utils.set_random_seed(0)
  model, shape, classes = _model()
  data = _data(shape, classes)
  callbacks = []
  if variant != "dense":
    model = kr.sparsify(model, FLAGS.sparsity, "erk")
    far = 10 ** 9
    if variant == "none":
      callbacks.append(kr.RigLScheduler(update_freq=1, begin_step=far, end_step=far))
    elif variant == "step":
      callbacks.append(kr.RigLScheduler(update_freq=1, end_step=far))
    elif variant == "host":
      callbacks.append(kr.RigLScheduler(data, update_freq=1, end_step=far))
  model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=FLAGS.jit_compile,
                steps_per_execution=FLAGS.steps_per_execution)
  model.fit(data, steps_per_epoch=FLAGS.steps_per_execution, epochs=1, verbose=0,
            callbacks=callbacks)  # Traces everything.
  start = time.perf_counter()
  model.fit(data, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0, callbacks=callbacks)
  return time.perf_counter() - start


def main(_):
  variants = list(FLAGS.variants)
  times = {v: [] for v in variants}
  for round_ in range(FLAGS.repeats):
    order = variants if round_ % 2 == 0 else variants[::-1]
    for variant in order:
      times[variant].append(run(variant) / FLAGS.steps)
      print(f"  round {round_} {variant:6s} {times[variant][-1] * 1e3:9.2f} ms/step",
            flush=True)
  median = {v: statistics.median(t) for v, t in times.items()}
  base = median.get("none")
  print(f"\n{FLAGS.model}, {FLAVOUR}, batch {FLAGS.batch_size}"
        f"{'' if FLAGS.model == 'lenet300_100' else f', {FLAGS.image_size}px'}, "
        f"{FLAGS.sparsity:.0%} ERK, jit_compile={FLAGS.jit_compile}, "
        f"steps_per_execution={FLAGS.steps_per_execution}; medians of {FLAGS.repeats} "
        f"rounds of {FLAGS.steps} steps")
  print(f"{'variant':8s} {'ms/step':>9s} {'update ms':>10s} {'vs step':>8s} "
        f"{'at dT=100':>10s}")
  for variant in variants:
    step_ms = median[variant] * 1e3
    if base is not None and variant in ("step", "host"):
      update = (median[variant] - base) * 1e3
      print(f"{variant:8s} {step_ms:9.2f} {update:10.2f} {update / (base * 1e3):8.2f} "
            f"{update / (100 * base * 1e3):10.4f}")
    else:
      print(f"{variant:8s} {step_ms:9.2f} {'-':>10s} {'-':>8s} {'-':>10s}")


if __name__ == "__main__":
  app.run(main)
