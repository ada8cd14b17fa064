"""examples/train.py end to end: every method and named config, resume, export.

Runs are in-process (flags re-parsed for each) and a few steps long; ImageNet
and CIFAR-10 come from `tfds.testing.mock_data` at small image sizes. The
conftest splits the CPU into two logical devices for `--strategy=mirrored`.
"""

import json
import os

from absl import flags
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_rigl as kr
from keras_rigl._keras import keras
from examples import configs
from examples import train

FLAGS = flags.FLAGS
FASHION = ["--train_steps=4", "--steps_per_epoch=2", "--eval_steps=2",
           "--update_freq=2", "--batch_size=32"]


def parse(*args):
  """Parses train.py's flags from `args` (and nothing left from earlier tests)."""
  FLAGS.unparse_flags()
  FLAGS(["train.py", "--verbose=0", *args])
  return train.setup_from_flags(FLAGS)


def run(*args, mock_examples=None):
  config, options = parse(*args)
  try:
    if mock_examples:
      with tfds.testing.mock_data(num_examples=mock_examples):
        return train.run(config, options)
    return train.run(config, options)
  finally:
    FLAGS.unparse_flags()


def update_steps(report):
  return [u["step"] for u in report["mask_updates"]]


def rows(report):
  return {r["name"]: r for r in report["sparsity"]["layers"]}


def check_files(report, model_dir):
  """report.png / report.json are written and hold the run's numbers."""
  png = os.path.join(model_dir, "report.png")
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(png) > 10_000
  with open(os.path.join(model_dir, "report.json")) as f:
    saved = json.load(f)
  assert saved["steps"] == report["steps"]
  assert saved["test"] == pytest.approx(report["test"])
  assert saved["sparsity"]["total"] == pytest.approx(report["sparsity"]["total"])
  return saved


# --- the default run, its report and export ------------------------------------


def test_default_rigl_run_report_and_export(tmp_path, capsys):
  model_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "export")
  report = run(*FASHION, "--strategy=one_device", f"--model_dir={model_dir}",
               f"--export_dir={export_dir}", "--export_tflite")
  assert report["config"] == configs.DEFAULT
  assert report["setup"]["method"] == "rigl" and report["setup"]["distribution"] == "erk"
  assert report["steps"] == 4 and report["run"]["replicas"] == 1
  assert report["sparsity"]["total"] == pytest.approx(0.9, abs=1e-3)
  assert 0.0 <= report["test"]["accuracy"] <= 1.0
  # RigL updates every 2 steps until end_step = 75% of 4 steps = 3.
  steps = update_steps(report)
  assert 2 in steps and all(s % 2 == 0 and s <= 3 for s in steps), steps
  assert all(0.0 < u["mask_change"] < 0.1 for u in report["mask_updates"])
  assert all(0.0 < u["drop_fraction"] <= 0.3 for u in report["mask_updates"])
  assert [h["epoch"] for h in report["history"]] == [1, 2]
  assert all("val_accuracy" in h and "learning_rate" in h for h in report["history"])
  flops, size = report["flops"], report["size"]
  assert 0.05 < flops["inference_ratio"] < 0.2
  assert 0.05 < flops["training_ratio"] < 0.2
  assert flops["inference_dense"] == 532810
  assert 0.05 < size["ratio"] < 0.3 and size["dense_bytes"] == 1066440
  saved = check_files(report, model_dir)
  assert saved["plan"]["train_steps"] == 4
  assert os.path.exists(os.path.join(model_dir, "backup"))
  assert os.path.exists(os.path.join(model_dir, "checkpoints", "best.weights.h5"))
  out = capsys.readouterr().out
  assert "keras-rigl report" in out and "test accuracy" in out and "total" in out
  # The SavedModel computes with W * M: same logits as the trained model.
  served = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
  fn = served.signatures["serving_default"]
  images = tf.random.stateless_uniform([3, 28, 28, 1], [1, 2])
  logits = list(fn(images).values())[0]
  assert logits.shape == (3, 10)
  assert os.path.getsize(os.path.join(export_dir, "model.tflite")) > 1000


def test_tensorboard_scalars(tmp_path):
  pytest.importorskip("tensorboard")  # tf.summary writes nothing without it.
  run(*FASHION, f"--model_dir={tmp_path}")
  tags = {}
  events = tf.io.gfile.glob(os.path.join(tmp_path, "logs", "rigl", "events.*"))
  for path in events:
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  assert tags["learning_rate"] == [2, 4]
  assert tags["sparsity/fc1"] == [2, 4] and "sparsity/total" in tags
  assert 2 in tags["mask/change"] and "mask/drop_fraction" in tags
  assert tf.io.gfile.glob(os.path.join(tmp_path, "logs", "train", "events.*"))


def test_mirrored_rigl(tmp_path):
  report = run(*FASHION, "--strategy=mirrored", f"--model_dir={tmp_path}",
               "--mixed_precision")
  assert report["run"]["replicas"] == 2
  assert report["run"]["mixed_precision"] == "mixed_bfloat16"
  assert report["steps"] == 4
  assert 2 in update_steps(report)
  assert report["sparsity"]["total"] == pytest.approx(0.9, abs=1e-3)
  check_files(report, str(tmp_path))
  # The global policy is restored for whatever runs next.
  assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("method", ["dense", "small_dense", "static", "set", "pruning"])
def test_methods(tmp_path, method):
  extra = ["--pruning_begin_step=0", "--pruning_end_step=2"] if method == "pruning" else []
  report = run(*FASHION, f"--method={method}", "--distribution=uniform",
               f"--model_dir={tmp_path}", *extra)
  assert report["steps"] == 4
  total = report["sparsity"]
  if method == "dense":
    assert total["total"] < 0.01 and report["flops"]["inference_ratio"] == 1.0
    assert report["flops"]["training_ratio"] == pytest.approx(1.0)
  elif method == "small_dense":
    width = report["run"]["small_dense_width"]
    assert 0.05 < width < 0.5
    # About the sparse model's 10% of the kernel weights, all of them dense.
    assert total["params"] == pytest.approx(0.1 * 266200, rel=0.05)
    assert rows(report)["fc1"]["shape"][1] == round(300 * width)
    assert 0.05 < report["flops"]["inference_ratio"] < 0.2
  else:
    assert total["total"] == pytest.approx(0.9, abs=1e-3)
    assert all(r["sparsity"] == pytest.approx(0.9, abs=1e-3) for r in rows(report).values())
  if method == "set":
    assert 2 in update_steps(report)
  if method == "pruning":
    # Dense at first, pruned to the target at step 2.
    assert 2 in update_steps(report)
    assert report["history"][0]["sparsity"] < report["history"][1]["sparsity"]
  if method in ("dense", "small_dense", "static"):
    assert report["mask_updates"] == []
  check_files(report, str(tmp_path))


def test_resume_from_backup(tmp_path):
  """A run with a larger --train_steps continues from the backup of the first."""
  args = ["--steps_per_epoch=2", "--eval_steps=1", "--update_freq=2",
          "--batch_size=32", f"--model_dir={tmp_path}", "--end_step=4"]
  first = run("--train_steps=2", *args)
  assert first["steps"] == 2
  masks = {r["name"]: r["nnz"] for r in first["sparsity"]["layers"]}
  second = run("--train_steps=4", *args)
  assert second["steps"] == 4  # Not 6: the second run trained one epoch only.
  assert [h["epoch"] for h in second["history"]] == [1, 2]
  assert [h["step"] for h in second["history"]] == [2, 4]
  # The updates of the first run are kept in the history.
  assert update_steps(second)[:len(first["mask_updates"])] == update_steps(first)
  assert 2 in update_steps(second)
  assert {r["name"]: r["nnz"] for r in second["sparsity"]["layers"]} == masks
  assert os.listdir(os.path.join(tmp_path, "backup"))  # Kept for a later run.


# --- the named configs (mock ImageNet / CIFAR-10) ------------------------------


# Each named config runs in one flavour (CI time: these are the suite's
# slowest runs); with tests/test_imagenet_compiled.py (ResNet-50 compiled in
# Keras 3, MobileNet v1 compiled in tf_keras) each flavour builds and trains
# both ImageNet recipes at least once.
_NAMED_CONFIGS = {
    "keras3": [("imagenet_mobilenet_v1", "mirrored")],
    "tf_keras": [("imagenet_resnet50", "one_device"), ("imagenet_mobilenet_v2", "one_device"),
                 ("cifar10_wrn_22_2", "mirrored")],
}[kr.keras_flavour]


@pytest.mark.parametrize("name,strategy", _NAMED_CONFIGS)
def test_named_configs(tmp_path, name, strategy):
  # RigL updates on WRN; none on the ImageNet models (25M-weight updates are slow).
  update = ["--update_freq=1"] if name.startswith("cifar") else ["--begin_step=100"]
  report = run(f"--config={name}", f"--strategy={strategy}", "--image_size=32",
               "--batch_size=4", "--train_steps=2", "--eval_steps=1",
               f"--model_dir={tmp_path}", *update, mock_examples=8)
  config = configs.get(name)
  assert report["steps"] == 2
  assert report["setup"]["model"] == config.model
  assert report["run"]["replicas"] == (2 if strategy == "mirrored" else 1)
  layers = rows(report)
  # ERK: every layer of ResNet-50 is sparse; the dense ones stay dense.
  for row in report["sparsity"]["layers"]:
    dense = row["name"] in config.dense_layers or (
        config.dense_depthwise and "depthwise" in row["name"])
    if dense:
      assert row["sparsity"] < 0.01, row
  if name == "imagenet_resnet50":
    assert layers["conv1"]["sparsity"] > 0.3
    assert "top5_accuracy" in report["test"]
    assert report["plan"]["end_step"] == 25000
  if name.startswith("imagenet_mobilenet"):
    assert layers["logits"]["sparsity"] > 0.5
  if name.startswith("cifar"):
    assert 1 in update_steps(report)
  assert report["sparsity"]["total"] > 0.8
  check_files(report, str(tmp_path))


# --- building blocks -------------------------------------------------------------


def test_plan_and_multiplier():
  info = kr.data.dataset_info("imagenet2012")
  plan = train.make_plan(configs.get("imagenet_mobilenet_v1"), info, multiplier=2.0)
  assert plan.train_steps == 64000
  assert plan.warmup_steps == round(8 * 2 * 1281167 / 4096)
  assert plan.lr_boundaries == tuple(round(e * 2 * 1281167 / 4096) for e in (40, 75, 95))
  assert plan.end_step == 50000
  assert plan.peak_learning_rate == pytest.approx(1.6)
  cifar = train.make_plan(configs.get("cifar10_wrn_22_2"), kr.data.dataset_info("cifar10"))
  assert cifar.train_steps == 97656 and cifar.lr_boundaries == (30000, 60000, 90000)
  assert cifar.lr_multipliers == pytest.approx((0.2, 0.04, 0.008))
  assert (cifar.pruning_begin_step, cifar.pruning_end_step, cifar.pruning_freq) == (
      20000, 75000, 1000)
  fashion = train.make_plan(configs.get(configs.DEFAULT), kr.data.dataset_info("fashion_mnist"))
  assert fashion.train_steps == 4680 and fashion.epochs == 10
  assert fashion.lr_boundaries == (2340, 3510) and fashion.end_step == 3510
  # The pruning window sits on multiples of the pruning frequency (100).
  assert (fashion.pruning_begin_step, fashion.pruning_end_step) == (900, 3500)


def test_learning_rate_schedule_round_trip():
  schedule = train.WarmupPiecewiseDecay(1.6, 10, [30, 70], [0.1, 0.01])
  values = [float(schedule(s)) for s in (0, 5, 10, 29, 30, 69, 70, 1000)]
  assert values == pytest.approx([0.0, 0.8, 1.6, 1.6, 0.16, 0.16, 0.016, 0.016])
  again = train.WarmupPiecewiseDecay.from_config(schedule.get_config())
  assert [float(again(s)) for s in (5, 70)] == pytest.approx([0.8, 0.016])
  restored = keras.optimizers.schedules.deserialize(
      keras.optimizers.schedules.serialize(schedule))
  assert float(restored(30)) == pytest.approx(0.16)


def test_label_smoothing_loss_matches_keras():
  labels = tf.constant([0, 2, 1])
  logits = tf.random.stateless_normal([3, 3], [0, 1])
  ours = train.SparseCrossEntropy(label_smoothing=0.1)(labels, logits)
  reference = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
      tf.one_hot(labels, 3), logits)
  assert float(ours) == pytest.approx(float(reference), rel=1e-5)
  plain = train.SparseCrossEntropy()(labels, logits)
  assert float(plain) == pytest.approx(float(keras.losses.SparseCategoricalCrossentropy(
      from_logits=True)(labels, logits)), rel=1e-5)


def test_weight_decay_on_kernels_but_not_depthwise():
  model = kr.models.mobilenet_v1(width=0.25, input_shape=(32, 32, 3), num_classes=10)
  decayed = train.rebuild(model, weight_decay=1e-4, decay_depthwise=False)
  regularized = {l.name for l in decayed.layers
                 if getattr(l, "kernel_regularizer", None) is not None}
  assert "conv1" in regularized and "block1_pointwise" in regularized
  assert "logits" in regularized
  assert all(getattr(l, "depthwise_regularizer", None) is None for l in decayed.layers)
  assert decayed.get_layer("logits").kernel_regularizer.l2 == pytest.approx(5e-5)
  # The loss is wd/2 * sum(w^2), as tf.contrib's l2_regularizer(wd).
  kernels = [l.kernel for l in decayed.layers if l.name in regularized]
  expected = 5e-5 * sum(float(tf.reduce_sum(tf.square(k))) for k in kernels)
  assert float(tf.add_n(decayed.losses)) == pytest.approx(expected, rel=1e-4)
  # It survives sparsify: the wrapped layers keep their regularizers.
  sparse = kr.sparsify(decayed, 0.9, **train.sparsify_kwargs(
      configs.get("imagenet_mobilenet_v1"), decayed))
  assert len(sparse.losses) == len(decayed.losses)


def test_sparsify_kwargs_keep_dense_layers():
  model = kr.models.lenet5()  # Has a "conv1", like ResNet-50.
  config = configs.get("imagenet_resnet50")
  uniform = train.sparsify_kwargs(
      train.dataclasses.replace(config, distribution="uniform"), model)
  assert uniform["custom_sparsity"] == {"conv1": 0.0}
  assert train.sparsify_kwargs(config, model)["custom_sparsity"] is None


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--config=imagenet_resnet101"], ["--model=vgg16"], ["--dataset=mnist"],
    ["--method=lottery"], ["--sparsity=1.0"], ["--sparsity=-0.1"],
    ["--strategy=parameter_server"], ["--train_steps=4", "--epochs=2"],
    ["--distribution=random"],
])
def test_bad_flags_are_flag_errors(args):
  FLAGS.unparse_flags()
  with pytest.raises(flags.Error):
    FLAGS(["train.py", *args])
  FLAGS.unparse_flags()


def test_missing_data_is_a_clean_exit(tmp_path):
  parse(f"--data_dir={tmp_path}", "--train_steps=1", "--model_dir", str(tmp_path / "m"))
  try:
    with pytest.raises(SystemExit) as exit_info:
      train.main(["train.py"])
  finally:
    FLAGS.unparse_flags()
  message = str(exit_info.value.code)
  assert message.startswith("error:") and "fashion" in message.lower()


def test_batch_that_does_not_split_is_a_usage_error(tmp_path):
  parse("--strategy=mirrored", "--batch_size=5", "--train_steps=1",
        f"--model_dir={tmp_path}")
  try:
    with pytest.raises(SystemExit, match="error: .*replicas"):
      train.main(["train.py"])
  finally:
    FLAGS.unparse_flags()
