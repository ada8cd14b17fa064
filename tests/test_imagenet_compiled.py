"""The authors' ImageNet recipes run as a TPU runs them, on a synthetic ImageNet.

The synthetic set (examples/make_synthetic_imagenet.py) is written in the
TFRecord layout TensorFlow's ImageNet trainers read and goes through the
project's own ImageNet pipeline. The recipes then train a few steps under
MirroredStrategy on the conftest's two logical CPUs, with the train step
compiled by XLA (per replica, recipes/xla.py), several steps per execution
and RigL updates: masks move, counts stay exact, replicas stay identical.
"""

import os

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from keras_rigl.data import imagenet
from keras_rigl.data import imagenet_records
from keras_rigl.recipes import SetupError
from keras_rigl.recipes import strategy as strategy_lib
from examples import make_synthetic_imagenet
from examples import train

FLAGS = flags.FLAGS


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("synthetic_imagenet"))
  make_synthetic_imagenet.write_dataset(
      folder, num_classes=4, train_examples=32, validation_examples=16,
      train_shards=2, validation_shards=2, height=40, width=48, seed=0)
  return folder


def test_synthetic_set_has_the_real_layout_and_reads_back(synthetic_dir):
  names = sorted(os.listdir(synthetic_dir))
  assert names == ["train-00000-of-00002", "train-00001-of-00002",
                   "validation-00000-of-00002", "validation-00001-of-00002"]
  record = next(iter(tf.data.TFRecordDataset(os.path.join(synthetic_dir, names[0]))))
  example = tf.train.Example.FromString(record.numpy())
  features = example.features.feature
  # The keys and the 1-based label of the converted ILSVRC-2012 files.
  assert features["image/class/label"].int64_list.value == [1]
  assert features["image/format"].bytes_list.value == [b"JPEG"]
  jpeg = features["image/encoded"].bytes_list.value[0]
  assert tuple(tf.io.decode_jpeg(jpeg).shape) == (40, 48, 3)
  # Raw records: labels shifted back to [0, 1000), every class present.
  raw = imagenet.source("train", synthetic_dir, training=False, seed=0)
  labels = sorted(int(label) for _, label in raw)
  assert labels == sorted(list(range(4)) * 8)
  # The project's pipeline, at a reduced image size.
  images, labels = next(iter(kr.data.load("imagenet", "train", 8, data_dir=synthetic_dir,
                                          image_size=24, repeat=True)))
  assert images.shape == (8, 24, 24, 3) and images.dtype == tf.float32
  assert set(labels.numpy().tolist()) <= {0, 1, 2, 3}
  evaluation = kr.data.load("imagenet", "eval", 4, data_dir=synthetic_dir, image_size=24)
  assert sum(int(y.shape[0]) for _, y in evaluation) == 16


def test_classes_are_told_apart_by_colour(synthetic_dir):
  """Learnable labels: the mean colour of a crop predicts the class."""
  raw = imagenet.source("validation", synthetic_dir, training=False, seed=0)
  means = {}
  for jpeg, label in raw:
    means.setdefault(int(label), []).append(
        tf.reduce_mean(tf.cast(tf.io.decode_jpeg(jpeg), tf.float32), [0, 1]).numpy())
  centres = {c: np.mean(v, 0) for c, v in means.items()}
  for c, values in means.items():
    for value in values:
      nearest = min(centres, key=lambda k: np.linalg.norm(centres[k] - value))
      assert nearest == c


def test_missing_validation_shards_say_what_to_do(tmp_path):
  make_synthetic_imagenet.write_split(str(tmp_path), "train", 2, 1, 2, 8, 8, 0)
  with pytest.raises(kr.data.DataNotFoundError, match="validation shards"):
    kr.data.load("imagenet", "eval", 2, data_dir=str(tmp_path))


def test_writer_refuses_to_overwrite_and_bad_values(synthetic_dir, tmp_path):
  with pytest.raises(ValueError, match="already holds train shards"):
    make_synthetic_imagenet.write_dataset(synthetic_dir)
  with pytest.raises(ValueError, match=r"num_classes must be in \[1, 1000\]"):
    make_synthetic_imagenet.write_dataset(str(tmp_path / "a"), num_classes=1001)
  with pytest.raises(ValueError, match="at most as many shards as examples"):
    make_synthetic_imagenet.write_dataset(str(tmp_path / "b"), train_examples=2,
                                          train_shards=3)


def test_cpu_devices_cannot_change_once_tensorflow_runs():
  strategy_lib.split_cpu(2)  # What the conftest made: accepted.
  with pytest.raises(SetupError, match="--cpu_devices=3.*--cpu_devices=2"):
    strategy_lib.split_cpu(3)


def _replicas(variable):
  inner = getattr(variable, "value", variable) if kr.keras.__name__ == "keras" else variable
  return [np.asarray(v) for v in getattr(inner, "values", (inner,))]


class _MaskProbe(keras.callbacks.Callback):
  """Masks (every replica's copy) at the start and at the end of training."""

  def __init__(self):
    super().__init__()
    self.begin, self.end = {}, {}

  def _masks(self):
    masks = {}
    for layer in self.model.layers:
      for index, (_, mask) in enumerate(getattr(layer, "masked_weights", ())):
        masks[(layer.name, index)] = _replicas(mask)
    return masks

  def on_train_begin(self, logs=None):
    self.begin = self._masks()

  def on_train_end(self, logs=None):
    self.end = self._masks()


# One recipe a flavour (the same code path; XLA compiling the train step is
# most of each run, 1-2.5 minutes): ResNet-50 in Keras 3, MobileNet v1 in tf_keras.
_COMPILED_RECIPES = ([("imagenet_resnet50", 0.8)] if kr.keras_flavour == "keras3"
                     else [("imagenet_mobilenet_v1", 0.9)])


@pytest.mark.parametrize("config,sparsity", _COMPILED_RECIPES)
def test_recipe_compiled_mirrored_rigl(synthetic_dir, tmp_path, config, sparsity):
  FLAGS.unparse_flags()
  FLAGS(["train.py", "--verbose=0", f"--config={config}", f"--data_dir={synthetic_dir}",
         "--image_size=32", "--batch_size=4", "--train_steps=4", "--steps_per_epoch=4",
         "--eval_steps=1", "--strategy=mirrored", "--cpu_devices=2", "--jit_compile",
         "--steps_per_execution=2", "--update_freq=2", "--end_step=3",
         f"--sparsity={sparsity}", f"--model_dir={tmp_path}"])
  try:
    cfg, options = train.setup_from_flags(FLAGS)
    probe = _MaskProbe()
    report = train.run(cfg, options, callbacks=[probe])
  finally:
    FLAGS.unparse_flags()
  assert report["steps"] == 4 and report["run"]["replicas"] == 2
  assert [u["step"] for u in report["mask_updates"]] == [0, 2]
  assert report["options"]["jit_compile"] is True
  moved = 0
  for key, before in probe.begin.items():
    after = probe.end[key]
    assert len(after) == 2, key
    # Replicas identical, bit for bit.
    np.testing.assert_array_equal(after[0], after[1], err_msg=str(key))
    # Counts exact: the number of ones never changes.
    assert after[0].sum() == before[0].sum(), key
    moved += int((after[0] != before[0]).sum())
  assert moved > 0
  assert report["sparsity"]["total"] == pytest.approx(sparsity, abs=0.01)
