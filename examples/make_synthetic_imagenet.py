r"""Writes a small synthetic ImageNet in the TFRecord layout ImageNet trainers read.

The files look like a converted ILSVRC-2012 (``train-00000-of-00004``, ...,
``validation-00000-of-00002``; JPEG bytes under ``image/encoded``, the class
under ``image/class/label`` stored 1-based; see
`keras_rigl.data.imagenet_records`), so `examples/train.py` reads them through
the project's own ImageNet pipeline with ``--data_dir``:

  python examples/make_synthetic_imagenet.py --output_dir=/tmp/fake_imagenet
  python examples/train.py --config=imagenet_resnet50 \
      --data_dir=/tmp/fake_imagenet --image_size=64 --batch_size=16 \
      --train_steps=300 --steps_per_epoch=100 --eval_steps=4 \
      --strategy=mirrored --cpu_devices=2 --jit_compile --steps_per_execution=10 \
      --update_freq=100

Images are learnable: each class has its own base colour and stripe pattern
(orientation and frequency), and every image adds its own brightness, phase
and pixel noise, so a few hundred steps show the loss falling while random
crops and flips keep the class visible. Labels use the first `num_classes`
of the 1000 ImageNet classes; the models keep their 1000 outputs.
"""

import os
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from examples import quiet
if __name__ == "__main__":
  quiet.import_tensorflow(quiet.wants_tf_logs(sys.argv))

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from keras_rigl.data import imagenet_records
# pylint: enable=g-import-not-at-top,wrong-import-position

def _define_flags():
  """The command line (only when run as a script: tests import this module
  next to examples/train.py, whose flags share names such as --seed)."""
  flags.DEFINE_string("output_dir", None, "Folder to write the shards into (created "
                      "if missing; must not already hold shards).")
  flags.DEFINE_integer("num_classes", 10, "Classes used, the first of ImageNet's 1000.",
                       lower_bound=1, upper_bound=1000)
  flags.DEFINE_integer("train_examples", 1024, "Training images.", lower_bound=1)
  flags.DEFINE_integer("validation_examples", 256, "Validation images.", lower_bound=1)
  flags.DEFINE_integer("train_shards", 4, "Training files.", lower_bound=1)
  flags.DEFINE_integer("validation_shards", 2, "Validation files.", lower_bound=1)
  flags.DEFINE_integer("height", 72, "Image height in pixels.", lower_bound=8)
  flags.DEFINE_integer("width", 88, "Image width in pixels.", lower_bound=8)
  flags.DEFINE_integer("seed", 0, "Seed of the class patterns and the images.",
                       lower_bound=0)


def class_styles(num_classes, seed=0):
  """Per class: (base RGB colour in [40, 215], stripe angle, stripe period).

  Example:
  >>> colours, angles, periods = class_styles(3)
  >>> colours.shape, angles.shape, bool((periods >= 4).all())
  ((3, 3), (3,), True)
  """
  rng = np.random.default_rng([seed, 7])
  colours = rng.uniform(40, 215, size=(num_classes, 3))
  angles = rng.uniform(0, np.pi, size=num_classes)
  periods = rng.uniform(4, 16, size=num_classes)
  return colours, angles, periods


def make_image(label, styles, height, width, rng):
  """One uint8 ``[height, width, 3]`` image of class `label`.

  Example:
  >>> image = make_image(1, class_styles(2), 8, 10, np.random.default_rng(0))
  >>> image.shape, image.dtype.name
  ((8, 10, 3), 'uint8')
  """
  colours, angles, periods = styles
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  angle = angles[label]
  phase = rng.uniform(0, 2 * np.pi)
  wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / periods[label]
                + phase)
  brightness = rng.uniform(0.8, 1.2)
  image = colours[label] * brightness + 35.0 * wave[..., None]
  image += rng.normal(0, 10, size=image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def write_split(output_dir, split, num_examples, num_shards, num_classes, height,
                width, seed):
  """Writes `num_examples` images of `split` over `num_shards` files; their paths.

  Labels cycle through the classes (balanced), images go to shards round
  robin. Example in `write_dataset`.
  """
  if num_shards > num_examples:
    raise ValueError(f"{split}: {num_shards} shards for {num_examples} examples would "
                     "leave empty files; use at most as many shards as examples.")
  styles = class_styles(num_classes, seed)
  rng = np.random.default_rng([seed, 0 if split == "train" else 1])
  paths = [os.path.join(output_dir, imagenet_records.shard_name(split, i, num_shards))
           for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  try:
    for index in range(num_examples):
      label = index % num_classes
      image = make_image(label, styles, height, width, rng)
      jpeg = tf.io.encode_jpeg(image, quality=90).numpy()
      writers[index % num_shards].write(imagenet_records.serialize_example(
          jpeg, label, height, width, filename=f"synthetic_{split}_{index:08d}.JPEG",
          synset=f"n{label:08d}", text=f"synthetic class {label}"))
  finally:
    for writer in writers:
      writer.close()
  return paths


def write_dataset(output_dir, num_classes=10, train_examples=1024,
                  validation_examples=256, train_shards=4, validation_shards=2,
                  height=72, width=88, seed=0):
  """Writes both splits into `output_dir`; returns {split: [paths]}.

  Raises ValueError (naming the fix) for out-of-range values or a folder that
  already holds shards.

  Example:
  >>> import tempfile
  >>> written = write_dataset(tempfile.mkdtemp(), num_classes=2, train_examples=4,
  ...                         validation_examples=2, train_shards=2,
  ...                         validation_shards=1, height=8, width=8)
  >>> [os.path.basename(p) for p in written["train"]]
  ['train-00000-of-00002', 'train-00001-of-00002']
  """
  if not output_dir:
    raise ValueError("Pass --output_dir=DIR, the folder to write the shards into.")
  if not 1 <= num_classes <= 1000:
    raise ValueError(f"num_classes must be in [1, 1000] (ImageNet's classes), got "
                     f"{num_classes}.")
  if min(height, width) < 8:
    raise ValueError(f"Images of {height}x{width} are too small; use at least 8x8.")
  for split in ("train", "validation"):
    if imagenet_records.files(split, output_dir):
      raise ValueError(f"{output_dir} already holds {split} shards; pass a new "
                       "--output_dir or remove the old shards.")
  tf.io.gfile.makedirs(output_dir)
  return {
      "train": write_split(output_dir, "train", train_examples, train_shards,
                           num_classes, height, width, seed),
      "validation": write_split(output_dir, "validation", validation_examples,
                                validation_shards, num_classes, height, width, seed),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  try:
    written = write_dataset(
        f.output_dir, f.num_classes, f.train_examples, f.validation_examples,
        f.train_shards, f.validation_shards, f.height, f.width, f.seed)
  except ValueError as e:
    sys.exit(f"error: {e}")
  for split, paths in written.items():
    print(f"{split}: {len(paths)} shards in {f.output_dir}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
