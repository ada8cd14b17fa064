"""A new drop/grow method in one file: a class, one registry entry, and it trains.

`RandomRegrowth` drops like RigL and grows uniformly at random (a SET-like
toy with its own RNG stream). Registered through the public registry
(`kr.methods.register`), it trains through `kr.recipes` and through
`examples/train.py --method=random_regrowth`, is charged by
`kr.training_flops`, and nothing outside this file names it.
"""

import json
import os

from absl import flags
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl.methods.drop_grow import DropGrowScheduler
from examples import train

FLAGS = flags.FLAGS
NAME = "random_regrowth"


class RandomRegrowth(DropGrowScheduler):
  """Drop the smallest |W|, regrow at random (stateless: seed, step, layer)."""

  def _grow_scores(self, step, source):
    del source  # No gradient batches: random growth.
    return [tf.random.stateless_uniform(
        t.weight.shape, seed=tf.stack([tf.constant(t.key, tf.int64), step + 7]))
            for t in self._targets]


def _arguments(config, plan, data, seed):
  del data  # Random growth reads no batches.
  return dict(update_freq=config.update_freq, drop_fraction=config.drop_fraction,
              drop_fraction_schedule=config.drop_fraction_schedule,
              begin_step=plan.begin_step, end_step=max(plan.end_step, plan.begin_step),
              grow_init=config.grow_init, seed=seed)


@pytest.fixture
def registered():
  method = kr.methods.register(kr.methods.Method(
      NAME, RandomRegrowth, flops="sparse", arguments=_arguments,
      summary="drop by magnitude, regrow at random (a test method)"))
  yield method
  kr.methods.unregister(NAME)


def _check(report):
  assert report["method"] == NAME and report["steps"] == 4
  # Masks moved at the update steps (every 2 steps up to 75% of 4).
  steps = [u["step"] for u in report["mask_updates"]]
  assert 2 in steps and all(0.0 < u["mask_change"] < 0.2 for u in report["mask_updates"])
  assert report["sparsity"]["total"] == pytest.approx(0.9, abs=1e-3)
  # Charged like the other sparse-from-scratch methods.
  assert report["flops"]["training_ratio"] == pytest.approx(
      report["flops"]["inference_ratio"], rel=1e-6)


def test_registry_knows_it(registered):
  assert kr.methods.get(NAME) is registered and NAME in kr.methods.names()
  assert registered.moves_masks
  count = kr.count_flops(kr.models.lenet300_100(), sparsities={"fc1": 0.9, "fc2": 0.9})
  assert kr.training_flops(count, NAME, 10, 100) == kr.training_flops(count, "set", 10, 100)
  config = kr.recipes.get_config("fashion_mnist_lenet300_100").replace(method=NAME)
  plan = kr.recipes.make_plan(config, kr.data.dataset_info("fashion_mnist"))
  assert isinstance(kr.recipes.make_scheduler(config, plan), RandomRegrowth)
  with pytest.raises(ValueError, match="min_fan_in"):
    config.replace(min_fan_in=1)  # An option the method did not declare.


def test_trains_through_recipes(registered, tmp_path):
  del registered
  config = kr.recipes.get_config("fashion_mnist_lenet300_100").replace(
      method=NAME, train_steps=4, epochs=None, batch_size=32, update_freq=2,
      distribution="uniform")
  options = kr.recipes.RunOptions(model_dir=str(tmp_path), steps_per_epoch=2,
                                  eval_steps=2, verbose=0, print_report=False)
  kr.recipes.validate(config, options)
  _check(kr.recipes.run(config, options))


def test_trains_through_train_py(registered, tmp_path):
  del registered
  FLAGS.unparse_flags()
  FLAGS(["train.py", "--verbose=0", f"--method={NAME}", "--train_steps=4",
         "--steps_per_epoch=2", "--eval_steps=2", "--update_freq=2", "--batch_size=32",
         "--distribution=uniform", f"--model_dir={tmp_path}"])
  try:
    train.main(["train.py"])
  finally:
    FLAGS.unparse_flags()
  with open(os.path.join(str(tmp_path), "report.json")) as f:
    _check(json.load(f))
