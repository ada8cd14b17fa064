"""One worker of a 2-worker MultiWorkerMirroredStrategy RigL run (see test).

Usage: python multi_worker_rigl.py OUTPUT.npz [data|step]   (TF_CONFIG set by the caller)

"data": grow scores from a separate pass over `data`; "step": the update inside
the train step (RigLScheduler without data).
"""

import sys

import numpy as np
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras


def main(output, mode="data"):
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  r = np.random.default_rng(1)
  x = r.normal(size=(256, 12)).astype("float32")
  y = x[:, :3].argmax(axis=1).astype("int32")
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True).with_options(options)
  with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)),
                              keras.layers.Dense(24, activation="relu", name="fc1"),
                              keras.layers.Dense(3, name="logits")])
    sparse = kr.sparsify(model, 0.8, "uniform")
    sparse.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  initial = [np.asarray(m).copy() for l in sparse.layers for _, m in l.masked_weights]
  rigl = kr.RigLScheduler(data if mode == "data" else None, update_freq=2, end_step=12)
  sparse.fit(data, epochs=3, verbose=0, callbacks=[rigl])
  arrays = {}
  for i, layer in enumerate(sparse.layers):
    for j, (w, m) in enumerate(layer.masked_weights):
      arrays[f"mask_{i}_{j}"] = np.asarray(m)
      arrays[f"weight_{i}_{j}"] = np.asarray(w)
      arrays[f"initial_{i}_{j}"] = initial.pop(0)
  arrays["updates"] = np.array(rigl.updates)
  np.savez(output, **arrays)


if __name__ == "__main__":
  main(*sys.argv[1:])
