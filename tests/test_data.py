"""Tests for keras_rigl.data: offline Fashion-MNIST, tfds pipelines, sharding.
"""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

# Two logical CPUs for MirroredStrategy. This must run before TensorFlow
# initialises its devices; if another module got there first we keep what it
# configured (the distributed test then needs at least two CPUs to exist).
try:
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0],
      [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:
  pass

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow_datasets as tfds

from keras_rigl import data
from keras_rigl.data import cifar10
from keras_rigl.data import imagenet
# pylint: enable=g-import-not-at-top,wrong-import-position


def _write_idx(path, array, magic):
  header = np.array([magic, *array.shape], ">i4").tobytes()
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion_mnist(directory, num_train=12, num_test=5):
  """Writes a tiny idx .gz set; pixel (i, r, c) = (i + r + c) % 256."""
  for prefix, n in (("train", num_train), ("t10k", num_test)):
    i, r, c = np.meshgrid(np.arange(n), np.arange(28), np.arange(28),
                          indexing="ij")
    _write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"),
               (i + r + c) % 256, 2051)
    _write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"),
               np.arange(n) % 10, 2049)
  return directory


@pytest.fixture
def no_download(monkeypatch):
  """Fails the test if anything asks tfds to download or prepare data."""
  def _forbidden(*args, **kwargs):
    raise AssertionError("tfds tried to download/prepare data")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      _forbidden)


# --- metadata -----------------------------------------------------------------


def test_dataset_info_and_steps():
  info = data.dataset_info("fashion_mnist")
  assert (info.num_classes, info.input_shape) == (10, (28, 28, 1))
  assert (info.num_train, info.num_eval) == (60000, 10000)
  assert data.dataset_info("cifar10").input_shape == (32, 32, 3)
  imnet = data.dataset_info("imagenet")  # alias
  assert imnet.name == "imagenet2012"
  assert (imnet.num_classes, imnet.input_shape) == (1000, (224, 224, 3))
  assert (imnet.num_train, imnet.num_eval) == (1281167, 50000)
  assert data.steps_per_epoch("cifar10", "train", 128) == 390
  assert data.steps_per_epoch("cifar10", "eval", 128) == 79
  assert data.steps_per_epoch("imagenet2012", "validation", 1000) == 50


def test_unknown_names():
  with pytest.raises(ValueError, match="Unknown dataset"):
    data.dataset_info("mnist9")
  with pytest.raises(ValueError, match="Unknown split"):
    data.load("fashion_mnist", "dev", 8)


# --- Fashion-MNIST ------------------------------------------------------------


def test_fashion_mnist_debian_arrays():
  x_train, y_train = data.load_fashion_mnist_arrays("train")
  x_test, y_test = data.load_fashion_mnist_arrays("test")
  assert x_train.shape == (60000, 28, 28, 1) and y_train.shape == (60000,)
  assert x_test.shape == (10000, 28, 28, 1) and y_test.shape == (10000,)
  assert x_train.dtype == np.uint8
  assert sorted(np.unique(y_train)) == list(range(10))


def test_fashion_mnist_pipeline():
  train = data.load("fashion_mnist", "train", batch_size=256, seed=0)
  assert int(train.cardinality()) == 60000 // 256  # drop_remainder
  images, labels = next(iter(train))
  assert images.shape == (256, 28, 28, 1) and images.dtype == tf.float32
  assert labels.shape == (256,) and labels.dtype == tf.int32

  # One eval batch holds the whole split: check count and range.
  (images, labels), = list(data.load("fashion_mnist", "eval", 10000))
  assert images.shape == (10000, 28, 28, 1)
  assert float(tf.reduce_min(images)) == 0.0
  assert float(tf.reduce_max(images)) == 1.0
  x_test, y_test = data.load_fashion_mnist_arrays("eval")
  np.testing.assert_array_equal(labels.numpy(), y_test)  # eval is unshuffled
  np.testing.assert_allclose(images.numpy(), x_test / 255.0, atol=1e-6)


def test_fashion_mnist_seeded_shuffle():
  def first_labels(seed):
    ds = data.load("fashion_mnist", "train", batch_size=64, seed=seed)
    return next(iter(ds))[1].numpy()
  np.testing.assert_array_equal(first_labels(3), first_labels(3))
  assert not np.array_equal(first_labels(3), first_labels(4))


def test_fashion_mnist_from_fake_idx_dir(tmp_path, no_download):
  _fake_fashion_mnist(str(tmp_path), num_train=12, num_test=5)
  x, y = data.load_fashion_mnist_arrays("train", data_dir=str(tmp_path))
  assert x.shape == (12, 28, 28, 1) and list(y) == [i % 10 for i in range(12)]

  train = list(data.load("fashion_mnist", "train", 4, data_dir=str(tmp_path)))
  assert [b[0].shape[0] for b in train] == [4, 4, 4]
  seen = sorted(int(v) for _, labels in train for v in labels)
  assert seen == sorted(i % 10 for i in range(12))  # a permutation of all

  test = list(data.load("fashion_mnist", "eval", 4, data_dir=str(tmp_path)))
  assert [b[0].shape[0] for b in test] == [4, 1]  # eval keeps the remainder
  expected = ((np.arange(28)[:, None] + np.arange(28)[None, :]) % 256) / 255.0
  np.testing.assert_allclose(test[0][0][0, :, :, 0], expected, atol=1e-6)


def test_fashion_mnist_tfds_fallback(tmp_path, no_download):
  # No idx files in data_dir: a tfds-prepared copy there is used instead.
  with tfds.testing.mock_data(num_examples=7):
    train = list(data.load("fashion_mnist", "train", 3,
                           data_dir=str(tmp_path)))
  assert [b[0].shape for b in train] == [(3, 28, 28, 1)] * 2
  assert train[0][0].dtype == tf.float32 and train[0][1].dtype == tf.int32
  assert 0.0 <= float(tf.reduce_min(train[0][0]))
  assert float(tf.reduce_max(train[0][0])) <= 1.0


def test_fashion_mnist_bad_idx_file(tmp_path):
  _fake_fashion_mnist(str(tmp_path))
  _write_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"), np.zeros(5), 1234)
  with pytest.raises(ValueError, match="not an idx file"):
    data.load_fashion_mnist_arrays("test", data_dir=str(tmp_path))


def test_fashion_mnist_missing_data_error(tmp_path, no_download):
  with pytest.raises(data.DataNotFoundError) as err:
    data.load("fashion_mnist", "train", 32, data_dir=str(tmp_path))
  assert isinstance(err.value, FileNotFoundError)
  message = str(err.value)
  assert "apt-get install dataset-fashion-mnist" in message
  assert "--data_dir" in message and "tfds" in message


# --- CIFAR-10 -----------------------------------------------------------------


def test_cifar10_pipeline_shapes(no_download):
  with tfds.testing.mock_data(num_examples=10):
    train = list(data.load("cifar10", "train", 4, seed=1))
    test = list(data.load("cifar10", "test", 4))
    raw = list(tfds.load("cifar10", split="test", as_supervised=True))
  assert [b[0].shape for b in train] == [(4, 32, 32, 3)] * 2
  assert train[0][0].dtype == tf.float32 and train[0][1].dtype == tf.int32
  assert [b[0].shape[0] for b in test] == [4, 4, 2]
  # Eval is normalisation only, per channel with the training statistics.
  expected = (raw[0][0].numpy() / 255.0 - cifar10.MEAN) / cifar10.STD
  np.testing.assert_allclose(test[0][0][0], expected, atol=1e-5)
  assert int(test[0][1][0]) == int(raw[0][1])


def test_cifar10_augmentation_is_pad_crop_flip():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
  padded = np.pad(image, [(4, 4), (4, 4), (0, 0)]).astype(np.float32)
  outputs = []
  for seed in range(6):
    out, _ = cifar10.preprocess_train(tf.constant(image), 0, [seed, 0])
    out = (out.numpy() * cifar10.STD + cifar10.MEAN) * 255.0
    windows = [padded[dy:dy + 32, dx:dx + 32]
               for dy in range(9) for dx in range(9)]
    windows += [w[:, ::-1] for w in windows]
    assert min(np.abs(out - w).max() for w in windows) < 1e-2
    outputs.append(out)
  assert any(not np.allclose(outputs[0], o) for o in outputs[1:])
  again, _ = cifar10.preprocess_train(tf.constant(image), 0, [0, 0])
  np.testing.assert_allclose(
      (again.numpy() * cifar10.STD + cifar10.MEAN) * 255.0, outputs[0],
      atol=1e-3)


def test_cifar10_missing_data_error(tmp_path, no_download):
  with pytest.raises(data.DataNotFoundError, match="--data_dir"):
    data.load("cifar10", "train", 32, data_dir=str(tmp_path))


# --- ImageNet -----------------------------------------------------------------


def test_imagenet_pipeline_shapes(no_download):
  with tfds.testing.mock_data(num_examples=5):
    train = list(data.load("imagenet2012", "train", 2, seed=0))
    train_again = list(data.load("imagenet2012", "train", 2, seed=0))
    val = list(data.load("imagenet2012", "eval", 3))
  assert [b[0].shape for b in train] == [(2, 224, 224, 3)] * 2
  assert train[0][0].dtype == tf.float32 and train[0][1].dtype == tf.int32
  np.testing.assert_array_equal(train[0][0], train_again[0][0])  # seeded
  assert [b[0].shape for b in val] == [(3, 224, 224, 3), (2, 224, 224, 3)]
  assert val[0][1].dtype == tf.int32


def test_imagenet_eval_resize_and_centre_crop():
  # 300x600: red left 100 columns, blue right 100, white top 10 rows, green
  # elsewhere. Shorter side -> 256 gives 256x512; the 224 centre crop covers
  # original rows ~19..281 and columns ~168..431: green only. A resize that
  # ignored the aspect ratio, or an off-centre crop, would show red/blue/white.
  image = np.zeros((300, 600, 3), np.uint8)
  image[:, :, 1] = 255
  image[:, :100] = (255, 0, 0)
  image[:, 500:] = (0, 0, 255)
  image[:10] = 255
  jpeg = tf.io.encode_jpeg(image, quality=100)
  out, label = imagenet.preprocess_eval(jpeg, 7)
  assert out.shape == (224, 224, 3) and int(label) == 7
  pixels = out.numpy() * imagenet.STDDEV_RGB + imagenet.MEAN_RGB
  assert pixels[..., 1].min() > 200
  assert pixels[..., 0].max() < 40 and pixels[..., 2].max() < 40


def test_imagenet_train_crop_varies_with_seed():
  image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), np.uint8)
  jpeg = tf.io.encode_jpeg(image)
  outs = [imagenet.preprocess_train(jpeg, 1, [s, 0])[0].numpy()
          for s in range(3)]
  assert all(o.shape == (224, 224, 3) for o in outs)
  assert not np.allclose(outs[0], outs[1]) or not np.allclose(outs[0], outs[2])
  np.testing.assert_array_equal(
      outs[0], imagenet.preprocess_train(jpeg, 1, [0, 0])[0].numpy())


def test_imagenet_missing_data_error(tmp_path, no_download):
  with pytest.raises(data.DataNotFoundError) as err:
    data.load("imagenet2012", "train", 32, data_dir=str(tmp_path))
  message = str(err.value)
  assert "downloads/manual" in message and "--data_dir" in message


# --- distribution -------------------------------------------------------------


def test_input_context_sharding(tmp_path):
  _fake_fashion_mnist(str(tmp_path), num_train=12)
  context = tf.distribute.InputContext(
      num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4)
  ds = data.load("fashion_mnist", "train", batch_size=8, shuffle=False,
                 data_dir=str(tmp_path), input_context=context)
  labels = [b[1].numpy().tolist() for b in ds]
  # Pipeline 1 of 2 reads records 1, 3, 5, ...; batches are 8 / 4 replicas.
  assert labels == [[1, 3], [5, 7], [9, 1]]


def _mirrored_strategy():
  from conftest import shared_mirrored_strategy  # pylint: disable=g-import-not-at-top
  return shared_mirrored_strategy()


def test_distributed_dataset_and_fit():
  from keras_rigl._keras import keras  # pylint: disable=g-import-not-at-top
  strategy = _mirrored_strategy()
  dist = data.load("fashion_mnist", "train", batch_size=64, seed=0,
                   repeat=True, strategy=strategy)
  images, labels = next(iter(dist))
  per_replica = strategy.experimental_local_results(images)
  assert len(per_replica) == 2
  assert all(x.shape == (32, 28, 28, 1) for x in per_replica)
  assert all(y.dtype == tf.int32
             for y in strategy.experimental_local_results(labels))

  plain = data.load("fashion_mnist", "train", batch_size=64, seed=0,
                    repeat=True)
  with strategy.scope():
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
  for train in (dist, plain):  # both forms are accepted by fit
    history = model.fit(train, epochs=1, steps_per_epoch=3, shuffle=False,
                        verbose=0)
    assert np.isfinite(history.history["loss"][-1])
  evaluation = data.load("fashion_mnist", "eval", batch_size=1000,
                         strategy=strategy)
  loss, _ = model.evaluate(evaluation, steps=2, verbose=0)
  assert np.isfinite(loss)


def test_global_batch_must_divide_replicas():
  strategy = _mirrored_strategy()
  with pytest.raises(ValueError, match="divisible"):
    data.load("fashion_mnist", "train", batch_size=63, strategy=strategy)


# --- resumable order ------------------------------------------------------------


def _labels(dataset, count):
  return [y.numpy().tolist() for _, y in dataset.take(count)]


def test_training_order_is_a_function_of_seed_pass_and_step(tmp_path):
  _fake_fashion_mnist(str(tmp_path), num_train=12)
  load = lambda start=0, seed=0: data.load(
      "fashion_mnist", "train", 4, data_dir=str(tmp_path), seed=seed, repeat=True,
      start_step=start)
  whole = _labels(load(), 12)  # 4 passes over 12 examples.
  passes = [sorted(sum(whole[i:i + 3], [])) for i in range(0, 12, 3)]
  assert all(p == sorted(i % 10 for i in range(12)) for p in passes)
  assert whole[:3] != whole[3:6]  # Every pass has its own order.
  for start in (1, 3, 7):  # Within the first pass, at a pass boundary, later.
    assert _labels(load(start), 12 - start) == whole[start:]
  tf.random.set_seed(123)  # The global seed plays no part.
  assert _labels(load(5), 3) == whole[5:8]
  assert _labels(load(seed=1), 12) != whole
  with pytest.raises(ValueError, match="start_step must be >= 0"):
    load(-1)


def test_start_step_with_input_context(tmp_path):
  _fake_fashion_mnist(str(tmp_path), num_train=12)
  context = tf.distribute.InputContext(
      num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4)
  load = lambda start: data.load(
      "fashion_mnist", "train", batch_size=8, data_dir=str(tmp_path), repeat=True,
      input_context=context, start_step=start)
  # Each step this pipeline feeds 2 replicas with 2 examples each.
  whole = _labels(load(0), 8)
  assert _labels(load(1), 6) == whole[2:]
  assert _labels(load(3), 2) == whole[6:]
