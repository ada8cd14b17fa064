"""The quality benchmark's grid, equal-FLOPs cells and table (no training)."""

import importlib.util
import os

import pytest

import keras_rigl as kr
from keras_rigl.recipes import builders
from keras_rigl.recipes import configs

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "benchmarks", "quality_fashion_mnist.py")


@pytest.fixture(scope="module")
def bench():
  spec = importlib.util.spec_from_file_location("quality_fashion_mnist", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_variant_is_available(bench):
  assert set(bench.available_variants()) == set(bench.VARIANTS)


def test_grid_adds_equal_flops_twins_of_erk(bench):
  cells = bench.grid(["small_dense", "rigl"], [0.9, 0.98], ["uniform", "erk"], True)
  assert [c.distribution for c in cells if c.variant == "rigl"] == [
      "uniform", "erk", "erk=flops"] * 2
  assert [c for c in cells if c.variant == "small_dense"] == [
      bench.Key("small_dense", 0.9, "-"), bench.Key("small_dense", 0.98, "-")]


def test_equal_flops_sparsity_matches_uniform_flops_on_lenet5(bench):
  base = configs.get_config("fashion_mnist_lenet300_100").replace(model="lenet5")
  sparsity = bench.equal_flops_sparsity(base, 0.95, (28, 28, 1), 10)
  assert sparsity > 0.95  # ERK is denser in the convolutions: fewer weights.
  model = builders.build_model("lenet5", (28, 28, 1), 10)
  uniform = kr.count_flops(kr.sparsify(model, 0.95, distribution="uniform")).ratio
  erk = kr.count_flops(kr.sparsify(model, sparsity, distribution="erk")).ratio
  assert erk == pytest.approx(uniform, rel=0.01)


def test_table_averages_seeds_and_counts_units_without_inputs(bench):
  key = bench.Key("rigl", 0.98, "uniform")
  runs = [dict(variant="rigl", sparsity=0.98, distribution="uniform", accuracy=a,
               training_flops=0.02, inference_flops=0.02, actual_sparsity=0.98,
               dead_units=[["fc1/kernel", d, 300], ["fc2/kernel", 1, 100]])
          for a, d in ((0.8, 200), (0.9, 220))]
  last = bench.table([key], runs).splitlines()[-1]
  assert last == ("| rigl | 98% | uniform | 85.00 ± 7.07 | 2 | 0.020x | 0.020x | "
                  "210 of 300 | 211 |")
