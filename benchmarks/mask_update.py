"""Time of one full RigL mask update against a full-sort baseline.

For every kernel of a model (ResNet-50: 54 layers, 25.5 M weights; and
LeNet-300-100), at ERK sparsity, one update = drop the weakest 30% of the
active weights and grow as many by gradient magnitude, over all layers in one
`tf.function`:

  ours          keras_rigl.update_mask (partial selection: top_k over the
                active weights for the drop, sampled-threshold top_k for growth)
  ours_static   keras_rigl.update_mask with max_update (static shapes, XLA/TPU)
  full_sort     the authors' approach: sort every layer's scores fully, twice
                (once for the drop, once for the growth)

Variants are interleaved over --repeats rounds; the table shows the median
milliseconds per update and the ratio to full_sort in the same run.

  python benchmarks/mask_update.py [--models resnet50,lenet300_100]
"""

import math
import statistics
import time

from absl import app, flags

import tensorflow as tf

import keras_rigl as kr
from keras_rigl.distributions import num_zeros
from keras_rigl.flops import kernel_shapes
from keras_rigl.masks import random_mask

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet50", "lenet300_100"], "Architectures to take kernel shapes from.")
flags.DEFINE_float("sparsity", 0.9, "ERK sparsity.")
flags.DEFINE_float("drop_fraction", 0.3, "Fraction of active weights moved.")
flags.DEFINE_integer("repeats", 5, "Interleaved rounds.")


def full_sort_update(mask, weights, grow_scores, drop_fraction):
  """Reference: two full sorts per layer, as in the authors' implementation."""
  shape = mask.shape
  mask, weights, grow_scores = (tf.reshape(t, [-1]) for t in (mask, weights, grow_scores))
  size = tf.size(mask)
  n_active = tf.cast(tf.reduce_sum(mask), tf.int32)
  n_drop = tf.cast(tf.floor(tf.cast(n_active, tf.float64) * drop_fraction), tf.int32)
  n_keep = n_active - n_drop
  drop_score = tf.where(mask > 0, tf.abs(weights), -1.0)
  keep_order = tf.argsort(drop_score, direction="DESCENDING")
  kept = tf.scatter_nd(keep_order[:, None], tf.cast(tf.range(size) < n_keep, tf.int32), [size]) > 0
  grow_score = tf.where(kept, -1.0, grow_scores)
  grow_order = tf.argsort(grow_score, direction="DESCENDING")
  grown = tf.scatter_nd(grow_order[:, None], tf.cast(tf.range(size) < n_drop, tf.int32), [size]) > 0
  return tf.reshape(tf.cast(kept | grown, mask.dtype), shape)


def layers_for(name):
  model = getattr(kr.models, name)()
  shapes = kernel_shapes(model)
  sparsities = kr.layer_sparsities(shapes, FLAGS.sparsity, "erk")
  layers = []
  for i, (key, shape) in enumerate(shapes.items()):
    mask = random_mask(shape, sparsities[key], (0, i))
    weights = tf.random.normal(shape) * mask
    grads = tf.abs(tf.random.normal(shape))
    size = math.prod(shape)
    n_active = size - num_zeros(size, sparsities[key])
    max_update = int(math.floor(n_active * FLAGS.drop_fraction))
    layers.append((mask, weights, grads, max_update))
  return layers, sum(math.prod(s) for s in shapes.values())


def main(_):
  rows = []
  for name in FLAGS.models:
    layers, total = layers_for(name)
    variants = {
        "ours": tf.function(lambda: [kr.update_mask(m, w, g, FLAGS.drop_fraction)[0]
                                     for m, w, g, _ in layers]),
        "ours_static": tf.function(lambda: [
            kr.update_mask(m, w, g, FLAGS.drop_fraction, max_update=k)[0]
            for m, w, g, k in layers]),
        "full_sort": tf.function(lambda: [full_sort_update(m, w, g, FLAGS.drop_fraction)
                                          for m, w, g, _ in layers]),
    }
    # Same masks from every variant (exact selection, same tie rule).
    results = {key: [t.numpy() for t in fn()] for key, fn in variants.items()}
    for key in ("ours_static", "full_sort"):
      same = all((a == b).all() for a, b in zip(results["ours"], results[key]))
      print(f"{name}: ours and {key} give identical masks: {same}")
    times = {key: [] for key in variants}
    for _ in range(FLAGS.repeats):
      for key, fn in variants.items():
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn())
        times[key].append(time.perf_counter() - start)
    base = statistics.median(times["full_sort"])
    for key in variants:
      median = statistics.median(times[key])
      rows.append((name, len(layers), total, key, median * 1000, median / base))
  print(f"\nOne mask update of every kernel, ERK {FLAGS.sparsity:.0%}, drop fraction "
        f"{FLAGS.drop_fraction}, median of {FLAGS.repeats}")
  print(f"{'model':14s} {'layers':>6s} {'weights':>11s} {'variant':12s} {'ms':>9s} {'vs full sort':>13s}")
  for name, count, total, key, ms, ratio in rows:
    print(f"{name:14s} {count:6d} {total:11,d} {key:12s} {ms:9.1f} {ratio:13.2f}")


if __name__ == "__main__":
  app.run(main)
