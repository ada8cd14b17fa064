r"""GPU check: masked LSTM/GRU compute with W * M on the cuDNN path too.

Keras picks a fused cuDNN kernel for LSTM and GRU on a GPU (Keras 3:
``use_cudnn="auto"`` or ``True``; tf_keras: automatically when the layer's
arguments allow it). That kernel reads the cell's weights directly, so this
script checks on a real GPU, for each layer and cuDNN setting, that

1. the wrapped layer ignores whatever is stored behind a zero mask: its
   output equals the stripped model's (whose kernels hold W * M) even with
   large garbage values written at the inactive positions;
2. after a few Adam steps (on the GPU) every inactive weight is still exactly
   zero and the mask counts are unchanged;
3. a RigL update moves the masks with constant counts.

It prints one PASS/FAIL line per check and exits 1 if any failed; under a
minute on any GPU. Run it in both flavours:

  python benchmarks/gpu_rnn_check.py
  TF_USE_LEGACY_KERAS=1 python benchmarks/gpu_rnn_check.py

Without a GPU it says so and exits 0 (``--allow_cpu`` runs the same checks on
the CPU's generic path).
"""

import os
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import IS_KERAS3, keras
# pylint: enable=g-import-not-at-top,wrong-import-position

L = keras.layers
BATCH, STEPS, FEATURES, UNITS = 16, 20, 32, 64
FAILURES = []


def report(ok, what):
  print(f"{'PASS' if ok else 'FAIL'}: {what}", flush=True)
  if not ok:
    FAILURES.append(what)


def make_model(kind, use_cudnn):
  layer_type = {"lstm": L.LSTM, "gru": L.GRU}[kind]
  kwargs = {"return_sequences": True, "name": kind}
  if IS_KERAS3:
    kwargs["use_cudnn"] = use_cudnn
  inputs = keras.Input((STEPS, FEATURES))
  h = layer_type(UNITS, **kwargs)(inputs)
  outputs = L.Dense(8, name="head")(L.GlobalAveragePooling1D()(h))
  model = keras.Model(inputs, outputs)
  return kr.sparsify(model, 0.75, distribution="uniform", seed=1)


def check(kind, use_cudnn, device):
  name = f"{kind} use_cudnn={use_cudnn!r} on {device} ({kr.keras_flavour})"
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
  y = rng.normal(size=(BATCH, 8)).astype("float32")
  with tf.device(device):
    model = make_model(kind, use_cudnn)
    wrapper = model.get_layer(f"sparse_{kind}")
    counts = [int(np.sum(np.asarray(m))) for _, m in wrapper.masked_weights]
    reference = np.asarray(kr.strip(model)(x, training=False))
    for weight, mask in wrapper.masked_weights:
      value = np.asarray(weight).copy()
      value[np.asarray(mask) == 0] = 1e3  # Garbage behind the masks.
      weight.assign(value)
    garbage_out = np.asarray(model(x, training=False))
    report(np.allclose(garbage_out, reference, rtol=1e-4, atol=1e-4),
           f"{name}: output uses W * M (max diff "
           f"{np.max(np.abs(garbage_out - reference)):.2e})")
    wrapper.apply_masks()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
    model.fit(data, steps_per_epoch=8, epochs=1, verbose=0)
    zero = all(np.all(np.asarray(w)[np.asarray(m) == 0] == 0)
               for w, m in wrapper.masked_weights)
    same = counts == [int(np.sum(np.asarray(m))) for _, m in wrapper.masked_weights]
    report(zero and same, f"{name}: inactive weights stay 0 after 8 Adam steps")
    before = [np.asarray(m).copy() for _, m in wrapper.masked_weights]
    rigl = kr.RigLScheduler(data, update_freq=2, drop_fraction=0.3, begin_step=8,
                            end_step=16)  # Steps 8-16: the second fit.
    model.fit(data, steps_per_epoch=8, epochs=1, verbose=0, callbacks=[rigl])
    after = [np.asarray(m) for _, m in wrapper.masked_weights]
    moved = all(np.any(a != b) for a, b in zip(after, before))
    constant = [int(a.sum()) for a in after] == counts
    zero = all(np.all(np.asarray(w)[np.asarray(m) == 0] == 0)
               for w, m in wrapper.masked_weights)
    report(moved and constant and zero,
           f"{name}: RigL moves kernel and recurrent_kernel masks, counts constant")
    stripped = np.asarray(kr.strip(model)(x, training=False))
    report(np.allclose(np.asarray(model(x, training=False)), stripped, rtol=1e-4, atol=1e-4),
           f"{name}: trained model equals its stripped copy")


def main():
  gpus = tf.config.list_logical_devices("GPU")
  if gpus:
    device = gpus[0].name
  elif "--allow_cpu" in sys.argv:
    device = "/CPU:0"
  else:
    print("SKIP: no GPU visible to TensorFlow (pass --allow_cpu to run on the CPU).")
    return 0
  settings = ("auto", True) if IS_KERAS3 else ("auto",)  # tf_keras: always auto.
  for kind in ("lstm", "gru"):
    for use_cudnn in settings:
      if not gpus and use_cudnn is True:
        continue  # use_cudnn=True needs a GPU.
      check(kind, use_cudnn, device)
  print(f"{'FAIL' if FAILURES else 'PASS'}: {len(FAILURES)} failed check(s)")
  return 1 if FAILURES else 0


if __name__ == "__main__":
  sys.exit(main())
