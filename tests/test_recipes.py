"""keras_rigl.recipes, piece by piece: configs, plan, schedules, losses,
regularization, small-dense width, strategy, inputs, callbacks, report, validate."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl import _keras
from keras_rigl.recipes import callbacks as callbacks_lib
from keras_rigl.recipes import report as report_lib

keras = kr.keras
recipes = kr.recipes


def test_public_names():
  assert kr.keras is _keras.keras
  assert kr.keras.__name__ == ("keras" if _keras.IS_KERAS3 else "tf_keras")
  config = kr.recipes.get_config("imagenet_resnet50")
  assert (config.model, config.batch_size, config.train_steps) == ("resnet50", 4096, 32000)
  from examples import configs  # pylint: disable=g-import-not-at-top
  assert configs.get("imagenet_resnet50") is config and configs.CONFIGS is recipes.CONFIGS


def test_configs_and_replace():
  assert set(recipes.CONFIGS) >= {"imagenet_resnet50", "imagenet_mobilenet_v1",
                                  "imagenet_mobilenet_v2", "cifar10_wrn_22_2",
                                  "fashion_mnist_lenet300_100"}
  for config in recipes.CONFIGS.values():
    assert config.check() is config
  with pytest.raises(ValueError, match="Unknown config 'resnet101'; use one of"):
    recipes.get_config("resnet101")
  config = recipes.get_config("cifar10_wrn_22_2")
  assert config.replace(sparsity=0.8).sparsity == 0.8 and config.sparsity == 0.9
  with pytest.raises(ValueError, match="learning_rate must be > 0"):
    config.replace(learning_rate=-1.0)
  assert config.peak_learning_rate(256) == pytest.approx(0.2)


def test_plan_of_default_config():
  plan = recipes.make_plan(recipes.get_config("fashion_mnist_lenet300_100"),
                           kr.data.dataset_info("fashion_mnist"), steps_per_epoch=100)
  assert (plan.train_steps, plan.steps_per_epoch, plan.epochs) == (4680, 100, 47)
  assert plan.end_step == 3510 and plan.lr_boundaries == (2340, 3510)


def test_warmup_piecewise_decay_serializes():
  schedule = recipes.WarmupPiecewiseDecay(1.6, 10, [30, 70], [0.1, 0.01])
  restored = keras.optimizers.schedules.deserialize(
      keras.optimizers.schedules.serialize(schedule))
  assert isinstance(restored, recipes.WarmupPiecewiseDecay)
  assert [float(restored(s)) for s in (5, 30, 70)] == pytest.approx([0.8, 0.16, 0.016])
  with pytest.raises(ValueError, match="same length"):
    recipes.WarmupPiecewiseDecay(1.0, 0, [10, 20], [0.1])


def test_sparse_cross_entropy_round_trip_and_float32():
  loss = recipes.SparseCrossEntropy(label_smoothing=0.2)
  again = recipes.SparseCrossEntropy.from_config(loss.get_config())
  assert again.label_smoothing == 0.2
  logits = tf.constant([[2.0, 0.0, -1.0]], tf.float16)
  value = again(tf.constant([1]), logits)
  assert value.dtype == tf.float32
  expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)(
      tf.one_hot([1], 3), tf.cast(logits, tf.float32))
  assert float(value) == pytest.approx(float(expected), rel=1e-5)


def test_rebuild_width_and_decay():
  model = kr.models.lenet300_100()
  assert recipes.rebuild(model) is model  # Nothing to change.
  narrow = recipes.rebuild(model, width=0.5, weight_decay=2e-4)
  assert [l.units for l in narrow.layers if hasattr(l, "units")] == [150, 50, 10]
  assert narrow.get_layer("fc1").kernel_regularizer.l2 == pytest.approx(1e-4)


def test_small_dense_width_matches_sparse_size():
  config = recipes.get_config("fashion_mnist_lenet300_100")
  width = recipes.small_dense_width(config, (28, 28, 1), 10)
  dense = recipes.rebuild(kr.models.lenet300_100(), width=width)
  sparse = kr.sparsify(kr.models.lenet300_100(), 0.9)
  assert kr.count_flops(dense).params == pytest.approx(kr.count_flops(sparse).nnz, rel=0.02)


def test_builders_per_method():
  config = recipes.get_config("fashion_mnist_lenet300_100")
  plan = recipes.make_plan(config, kr.data.dataset_info("fashion_mnist"))
  model, reference = recipes.build_training_model(config, (28, 28, 1), 10)
  assert kr.sparsity_report(model).sparsity == pytest.approx(0.9, abs=1e-3)
  assert reference.count_params() == 266610
  data = tf.data.Dataset.from_tensors((tf.zeros([2, 28, 28, 1]), tf.zeros([2], tf.int32)))
  kinds = {m: type(recipes.make_scheduler(config.replace(method=m), plan, data)).__name__
           for m in ("rigl", "set", "pruning", "static", "dense")}
  assert kinds == {"rigl": "RigLScheduler", "set": "SETScheduler",
                   "pruning": "MagnitudePruningScheduler", "static": "NoneType",
                   "dense": "NoneType"}
  with pytest.raises(ValueError, match="Unknown model 'vgg'"):
    recipes.build_model("vgg", (28, 28, 1), 10)


def test_make_strategy():
  assert recipes.make_strategy("one_device") is tf.distribute.get_strategy()
  with pytest.raises(recipes.SetupError, match="Unknown strategy 'ps'; use one of"):
    recipes.make_strategy("ps")


def test_inputs_start_where_a_resumed_run_stops():
  config = recipes.get_config("fashion_mnist_lenet300_100").replace(batch_size=256)
  strategy = tf.distribute.get_strategy()
  datasets = recipes.make_datasets(config, strategy, start_step=250)
  whole = [y.numpy() for _, y in datasets.rigl.take(252)][250:]
  resumed = [y.numpy() for _, y in datasets.fit_input.take(2)]
  np.testing.assert_array_equal(np.stack(whole), np.stack(resumed))
  assert datasets.evaluation.element_spec[0].shape.as_list() == [None, 28, 28, 1]


def _tiny_model():
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
  model.compile(keras.optimizers.SGD(0.1), "mse")
  return model


def test_resume_epoch_reads_both_backup_formats(tmp_path):
  backup = str(tmp_path / "backup")
  assert recipes.resume_epoch(backup) == 0
  data = tf.data.Dataset.from_tensors((tf.ones([2, 4]), tf.ones([2, 2]))).repeat()
  model = _tiny_model()
  model.fit(data, epochs=3, steps_per_epoch=2, verbose=0, callbacks=[
      keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)])
  assert recipes.resume_epoch(backup) == 3
  assert callbacks_lib.backup_dir("/x") == os.path.join("/x", "backup")


def test_stop_at_step_and_monitor(tmp_path):
  data = tf.data.Dataset.from_tensors((tf.ones([2, 4]), tf.ones([2, 2]))).repeat()
  model = _tiny_model()
  schedule = recipes.WarmupPiecewiseDecay(0.1, 0, [4], [0.5])
  history = str(tmp_path / "history.json")
  monitor = recipes.TrainingMonitor(schedule, history_path=history)
  model.fit(data, epochs=3, steps_per_epoch=2, verbose=0,
            callbacks=[recipes.StopAtStep(5), monitor])
  assert int(model.optimizer.iterations.numpy()) == 5
  assert [h["step"] for h in monitor.history] == [2, 4, 5]
  assert monitor.history[-1]["learning_rate"] == pytest.approx(0.05)
  with open(history) as f:
    assert [h["epoch"] for h in json.load(f)["history"]] == [1, 2, 3]


def test_report_text_json_and_figure(tmp_path):
  dense = kr.models.lenet300_100()
  sparse = kr.sparsify(dense, 0.9)
  report = report_lib.build_report(
      sparse, dense, method="rigl", steps=100, batch_size=32, update_freq=10,
      end_step=75, test_metrics={"accuracy": 0.5},
      history=[{"epoch": 1, "step": 100, "accuracy": np.float32(0.4)}],
      mask_updates=[{"step": 10, "mask_change": 0.01}], setup={"model": "lenet300_100"})
  assert report["sparsity"]["total"] == pytest.approx(0.9, abs=1e-3)
  assert 0.05 < report["flops"]["training_ratio"] < 0.2
  text = report_lib.format_report(report)
  assert "test accuracy   0.5000" in text and "fc1" in text
  saved = report_lib.save_json(report, str(tmp_path / "r" / "report.json"))
  with open(saved) as f:
    assert json.load(f)["history"][0]["accuracy"] == pytest.approx(0.4)
  png = report_lib.save_figure(report, str(tmp_path / "report.png"))
  assert os.path.getsize(png) > 10_000


def test_validate_returns_plan_and_names_the_setting(tmp_path):
  config = recipes.get_config("fashion_mnist_lenet300_100")
  plan = recipes.validate(config, recipes.RunOptions(model_dir=str(tmp_path / "new")))
  assert plan.train_steps == 4680
  with pytest.raises(recipes.SetupError, match="--batch_size=70000 is larger"):
    recipes.validate(config.replace(batch_size=70000), recipes.RunOptions())
  with pytest.raises(recipes.SetupError, match="--steps_per_epoch must be a positive"):
    recipes.validate(config, recipes.RunOptions(steps_per_epoch=0))


def test_cosine_learning_rate_schedule():
  schedule = recipes.WarmupCosineDecay(0.2, 100, warmup_steps=10)
  values = [float(schedule(s)) for s in (0, 5, 10, 55, 100, 150)]
  np.testing.assert_allclose(values, [0.0, 0.1, 0.2, 0.1, 0.0, 0.0], atol=1e-6)
  again = recipes.WarmupCosineDecay.from_config(schedule.get_config())
  assert again.get_config() == schedule.get_config()
  with pytest.raises(ValueError, match="decay_steps"):
    recipes.WarmupCosineDecay(0.1, 10, warmup_steps=10)


def test_authors_mlp_recipe_config():
  config = recipes.get_config("fashion_mnist_mlp_rigl_tf2")
  assert (config.train_steps, config.batch_size, config.peak_learning_rate()) == (11719, 128, 0.2)
  assert (config.lr_schedule, config.nesterov, config.weight_decay) == ("cosine", False, 2e-4)
  assert (config.update_freq, config.drop_fraction, config.end_fraction) == (500, 0.3, 1.0)
  assert (config.sparsity, config.distribution) == (0.98, "uniform")
  with pytest.raises(ValueError, match="lr_schedule"):
    config.replace(lr_schedule="linear")
