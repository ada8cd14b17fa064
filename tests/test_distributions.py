"""Tests for keras_rigl.distributions: uniform / ER / ERK layer sparsities."""

import math

import numpy as np
import pytest

from keras_rigl.distributions import layer_sparsities, num_zeros

LENET = {"fc1": (784, 300), "fc2": (300, 100), "fc3": (100, 10)}


def _nnz(shapes, sparsities):
  """Non-zeros the layers hold at the given sparsities (floor of zeros)."""
  return sum(int(np.prod(s)) - num_zeros(int(np.prod(s)), sparsities[n])
             for n, s in shapes.items())


def _budget(shapes, sparsity):
  """sum(N - floor(s N)): the non-zeros uniform sparsity keeps."""
  return sum(int(np.prod(s)) - math.floor(sparsity * int(np.prod(s)))
             for s in shapes.values())


def test_uniform_gives_every_layer_the_same_sparsity():
  result = layer_sparsities(LENET, 0.8, "uniform")
  assert result == {"fc1": 0.8, "fc2": 0.8, "fc3": 0.8}
  assert list(result) == list(LENET)  # Same keys, same order.


def test_zero_sparsity_is_dense_for_every_distribution():
  for distribution in ("uniform", "er", "erk"):
    assert layer_sparsities(LENET, 0.0, distribution) == {
        "fc1": 0.0, "fc2": 0.0, "fc3": 0.0}


def test_erk_by_hand_with_a_layer_forced_dense():
  # Sizes: fc1 784*300 = 235200, fc2 300*100 = 30000, fc3 100*10 = 1000.
  # Raw ERK densities sum(shape)/prod(shape):
  #   fc1 1084/235200, fc2 400/30000, fc3 110/1000.
  # Budget of non-zeros at 0.9: (235200 - 211680) + (30000 - 27000)
  #   + (1000 - 900) = 23520 + 3000 + 100 = 26620.
  # First factor: 26620 / (raw * N summed) = 26620 / (1084 + 400 + 110)
  #   = 26620 / 1594 = 16.70; fc3 would get 16.70 * 0.11 = 1.84 > 1, so fc3
  #   becomes dense (1000 non-zeros) and the factor is solved again:
  #   (26620 - 1000) / (1084 + 400) = 25620 / 1484 = 17.264...
  first_factor = 26620 / (1084 + 400 + 110)
  assert first_factor * 110 / 1000 > 1.0
  factor = (26620 - 1000) / (1084 + 400)
  density_fc1 = factor * 1084 / 235200  # 0.07957...
  density_fc2 = factor * 400 / 30000    # 0.23018...
  assert density_fc2 < 1.0  # No second round is needed.

  result = layer_sparsities(LENET, 0.9, "erk")
  assert result["fc3"] == 0.0
  assert result["fc1"] == pytest.approx(1.0 - density_fc1, abs=1e-12)
  assert result["fc2"] == pytest.approx(1.0 - density_fc2, abs=1e-12)
  assert result["fc1"] == pytest.approx(0.920432, abs=1e-6)
  assert result["fc2"] == pytest.approx(0.769811, abs=1e-6)
  # The densities times the sizes add up to the budget exactly (in reals).
  total = density_fc1 * 235200 + density_fc2 * 30000 + 1000
  assert total == pytest.approx(26620, abs=1e-6)


def test_erk_two_rounds_of_forcing_dense():
  # fc1 1000x1000 raw 2000/1e6, small 10x10 raw 20/100, mid 20x20 raw 40/400.
  # Budget at 0.5: 500000 + 50 + 200 = 500250.
  # Round 1: factor 500250 / (2000 + 20 + 40) = 242.8 -> small 48.6 > 1: dense.
  # Round 2: factor (500250 - 100) / (2000 + 40) = 245.2 -> mid 24.5 > 1: dense.
  # Round 3: factor (500250 - 100 - 400) / 2000 = 249.875 -> fc1 0.499875.
  shapes = {"fc1": (1000, 1000), "small": (10, 10), "mid": (20, 20)}
  assert 500250 / 2060 * 0.2 > 1
  assert (500250 - 100) / 2040 * 0.1 > 1
  result = layer_sparsities(shapes, 0.5, "erk")
  assert result["small"] == 0.0
  assert result["mid"] == 0.0
  assert result["fc1"] == pytest.approx(1.0 - (500250 - 500) / 2000 * 0.002, abs=1e-12)


@pytest.mark.parametrize("distribution", ["uniform", "er", "erk"])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95, 0.99])
def test_total_non_zeros_match_uniform_budget(distribution, sparsity):
  shapes = {"conv1": (3, 3, 3, 16), "conv2": (3, 3, 16, 32),
            "conv3": (5, 5, 32, 64), "fc": (1024, 100), "logits": (100, 10)}
  result = layer_sparsities(shapes, sparsity, distribution)
  budget = _budget(shapes, sparsity)
  if distribution == "uniform":
    # Every layer floors its own zeros: exactly the budget.
    assert _nnz(shapes, result) == budget
  else:
    # ER/ERK: the real-valued sum N (1 - s) equals the budget; the floors of
    # the per-layer zero counts move it by less than one per layer.
    real = sum(int(np.prod(s)) * (1.0 - result[n]) for n, s in shapes.items())
    assert real == pytest.approx(budget, abs=1e-6)
    assert abs(_nnz(shapes, result) - budget) <= len(shapes)
  for value in result.values():
    assert 0.0 <= value < 1.0


def test_erk_denser_for_smaller_layers():
  result = layer_sparsities(LENET, 0.95, "erk")
  assert result["fc1"] > result["fc2"] > result["fc3"]


def test_custom_sparsity_is_kept_and_left_out_of_the_scaling():
  custom = {"fc1": 0.5}
  result = layer_sparsities(LENET, 0.9, "erk", custom_sparsity=custom)
  assert result["fc1"] == 0.5
  # The other layers are scaled among themselves, as if fc1 did not exist.
  rest = layer_sparsities({"fc2": LENET["fc2"], "fc3": LENET["fc3"]}, 0.9, "erk")
  assert result["fc2"] == pytest.approx(rest["fc2"], abs=1e-12)
  assert result["fc3"] == pytest.approx(rest["fc3"], abs=1e-12)
  # ...and their non-zeros match their own budget only.
  real = sum(int(np.prod(LENET[n])) * (1 - result[n]) for n in ("fc2", "fc3"))
  assert real == pytest.approx(3000 + 100, abs=1e-6)
  # Custom 0.0 (keep dense) is kept as well, with uniform too.
  result = layer_sparsities(LENET, 0.9, "uniform", custom_sparsity={"fc3": 0.0})
  assert result == {"fc1": 0.9, "fc2": 0.9, "fc3": 0.0}


def test_custom_sparsity_accepts_zero_and_numeric_strings():
  result = layer_sparsities(LENET, 0.9, "erk", custom_sparsity={"fc1": "0.25"})
  assert result["fc1"] == 0.25


def test_erk_power_scale_zero_equals_uniform():
  # Sizes chosen so that s * N is an integer: floors change nothing.
  shapes = {"a": (10, 20), "b": (40, 5), "c": (3, 3, 8, 10)}
  for sparsity in (0.5, 0.9):
    erk0 = layer_sparsities(shapes, sparsity, "erk", erk_power_scale=0.0)
    uniform = layer_sparsities(shapes, sparsity, "uniform")
    for name in shapes:
      assert erk0[name] == pytest.approx(uniform[name], abs=1e-12)


def test_erk_power_scale_between_zero_and_one_interpolates():
  uniform = layer_sparsities(LENET, 0.95, "uniform")
  half = layer_sparsities(LENET, 0.95, "erk", erk_power_scale=0.5)
  full = layer_sparsities(LENET, 0.95, "erk", erk_power_scale=1.0)
  assert uniform["fc1"] < half["fc1"] < full["fc1"]
  assert uniform["fc3"] > half["fc3"] > full["fc3"]


def test_er_uses_only_the_last_two_dims_of_a_conv_shape():
  # conv (3,3,16,32): N = 4608, ER raw (16+32)/(16*32) = 48/512 = 0.09375
  #   (ERK would be (3+3+16+32)/4608 = 54/4608).
  # fc (128,64): N = 8192, raw 192/8192 = 0.0234375.
  # Budget at 0.9: (4608 - floor(4147.2)) + (8192 - floor(7372.8)) = 461 + 820.
  # Factor: 1281 / (0.09375*4608 + 0.0234375*8192) = 1281 / (432 + 192).
  shapes = {"conv": (3, 3, 16, 32), "fc": (128, 64)}
  factor = (461 + 820) / (432 + 192)
  result = layer_sparsities(shapes, 0.9, "er")
  assert result["conv"] == pytest.approx(1 - factor * 48 / 512, abs=1e-12)
  assert result["fc"] == pytest.approx(1 - factor * 192 / 8192, abs=1e-12)
  # ERK on the same shapes differs: the kernel dims count for ERK.
  # Factor: 1281 / (54 + 192); conv density 1281/246 * 54/4608.
  erk = layer_sparsities(shapes, 0.9, "erk")
  assert erk["conv"] == pytest.approx(1 - 1281 / 246 * 54 / 4608, abs=1e-12)
  assert erk["conv"] != pytest.approx(result["conv"], abs=1e-3)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "a", float("nan"), None])
def test_bad_sparsity_is_rejected(bad):
  with pytest.raises(ValueError, match=r"sparsity must be .*\[0, 1\)"):
    layer_sparsities(LENET, bad, "erk")


def test_bad_custom_sparsity_value_names_the_layer():
  with pytest.raises(ValueError, match=r"custom_sparsity\['fc2'\].*\[0, 1\)"):
    layer_sparsities(LENET, 0.9, "erk", custom_sparsity={"fc2": 1.0})


def test_unknown_distribution():
  with pytest.raises(ValueError, match=r"Unknown distribution 'erdos'"):
    layer_sparsities(LENET, 0.9, "erdos")


def test_custom_key_naming_no_layer():
  with pytest.raises(ValueError, match=r"custom_sparsity names \['fc9'\]"):
    layer_sparsities(LENET, 0.9, "erk", custom_sparsity={"fc9": 0.0})


@pytest.mark.parametrize("bad", [-1.0, -0.001, float("nan"), None])
def test_negative_power_scale(bad):
  with pytest.raises(ValueError, match=r"erk_power_scale must be >= 0"):
    layer_sparsities(LENET, 0.9, "erk", erk_power_scale=bad)


def test_empty_shape_is_rejected():
  with pytest.raises(ValueError, match=r"'b'.*empty shape"):
    layer_sparsities({"a": (4, 4), "b": (0, 4)}, 0.5, "erk")
