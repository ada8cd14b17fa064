"""Reference architectures: shapes, parameter counts, stable layer names."""

import numpy as np
import pytest

from keras_rigl import models
from keras_rigl._keras import keras

L = keras.layers


def kernel_layers(model):
  """Layers with a kernel (conv, depthwise, dense), in model order."""
  return [l for l in model.layers
          if getattr(l, "depthwise_kernel", None) is not None or
          getattr(l, "kernel", None) is not None]


def kernel_of(layer):
  k = getattr(layer, "depthwise_kernel", None)
  return layer.kernel if k is None else k


def n_kernel_weights(model):
  return sum(int(np.prod(kernel_of(l).shape)) for l in kernel_layers(model))


def n_trainable(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def resnet():
  return models.resnet50()


def test_exports_only_the_builders():
  assert sorted(models.__all__) == sorted(
      ["lenet300_100", "lenet5", "wide_resnet", "resnet50", "mobilenet_v1",
       "mobilenet_v2"])


def test_lenet300_100():
  model = models.lenet300_100()
  assert model.name == "lenet300_100"
  assert model.output_shape == (None, 10)
  assert [l.name for l in kernel_layers(model)] == ["fc1", "fc2", "logits"]
  assert n_kernel_weights(model) == 784 * 300 + 300 * 100 + 100 * 10
  # Logits, no softmax.
  assert model.get_layer("logits").activation is keras.activations.linear
  out = model(np.ones((2, 28, 28, 1), "float32"))
  assert tuple(out.shape) == (2, 10)


def test_lenet300_100_arguments():
  model = models.lenet300_100(input_shape=(8, 8), num_classes=3, name="tiny")
  assert model.name == "tiny"
  assert model.output_shape == (None, 3)
  assert tuple(model.get_layer("fc1").kernel.shape) == (64, 300)


def test_lenet5_caffe_variant():
  model = models.lenet5()
  assert model.output_shape == (None, 10)
  assert [l.name for l in kernel_layers(model)] == ["conv1", "conv2", "fc1", "logits"]
  assert tuple(model.get_layer("conv1").kernel.shape) == (5, 5, 1, 20)
  assert tuple(model.get_layer("conv2").kernel.shape) == (5, 5, 20, 50)
  assert tuple(model.get_layer("fc1").kernel.shape) == (4 * 4 * 50, 500)
  assert n_kernel_weights(model) == 430500
  assert tuple(model(np.ones((1, 28, 28, 1), "float32")).shape) == (1, 10)


def test_wide_resnet_22_2():
  model = models.wide_resnet(22, 2)
  assert model.name == "wide_resnet22_2"
  assert model.output_shape == (None, 10)
  names = [l.name for l in kernel_layers(model)]
  # conv1 + 3 groups x 3 blocks x 2 convs + 3 projections + logits.
  assert len(names) == 23
  assert names[0] == "conv1" and names[-1] == "logits"
  assert "group1_block1_shortcut" in names  # 16 -> 32 channels.
  assert "group1_block2_shortcut" not in names
  widths = {g: model.get_layer(f"group{g}_block3_conv2").filters for g in (1, 2, 3)}
  assert widths == {1: 32, 2: 64, 3: 128}
  assert model.get_layer("group2_block1_conv1").strides == (2, 2)
  assert model.get_layer("group2_block1_shortcut").strides == (2, 2)
  assert not any(l.use_bias for l in kernel_layers(model)[:-1])
  assert model.get_layer("logits").use_bias
  # Pre-activation: the block starts with BN, and a final BN precedes pooling.
  assert isinstance(model.get_layer("group1_block1_bn1"), L.BatchNormalization)
  assert isinstance(model.get_layer("final_bn"), L.BatchNormalization)
  assert model.get_layer("group1_block1_dropout").rate == pytest.approx(0.3)
  assert n_kernel_weights(model) == 1076912


def test_wide_resnet_runs_and_checks_depth():
  model = models.wide_resnet(10, 1, input_shape=(16, 16, 3), num_classes=4,
                             dropout=0.0)
  assert not [l for l in model.layers if isinstance(l, L.Dropout)]
  assert tuple(model(np.zeros((2, 16, 16, 3), "float32")).shape) == (2, 4)
  with pytest.raises(ValueError, match="6n"):
    models.wide_resnet(depth=20)


def test_resnet50_kernel_counts(resnet):
  layers = kernel_layers(resnet)
  assert len(layers) == 54
  assert sum(isinstance(l, L.Conv2D) for l in layers) == 53
  assert isinstance(layers[-1], L.Dense) and layers[-1].name == "logits"
  assert n_kernel_weights(resnet) == 25502912  # ~25.5 M, as in the paper.
  # Same trainable count as the reference ResNet-50 (torchvision/Keras).
  assert n_trainable(resnet) == 25557032
  assert resnet.output_shape == (None, 1000)
  assert resnet.name == "resnet50"


def test_resnet50_v1_5_structure(resnet):
  layers = kernel_layers(resnet)
  assert not any(l.use_bias for l in layers[:-1])  # Conv + BN, no bias.
  assert resnet.get_layer("logits").use_bias
  assert resnet.get_layer("conv1").kernel_size == (7, 7)
  assert resnet.get_layer("conv1").padding == "valid"  # Explicit fixed padding.
  for stage in "345":
    # v1.5: the 3x3 conv strides, the first 1x1 does not.
    assert resnet.get_layer(f"res{stage}a_branch2a").strides == (1, 1)
    assert resnet.get_layer(f"res{stage}a_branch2b").strides == (2, 2)
    assert resnet.get_layer(f"res{stage}a_branch1").strides == (2, 2)
  assert resnet.get_layer("res2a_branch2b").strides == (1, 1)
  names = [l.name for l in layers]
  # The order of the authors' layer list (their Keras ResNet-50).
  assert names[:6] == ["conv1", "res2a_branch2a", "res2a_branch2b",
                       "res2a_branch2c", "res2a_branch1", "res2b_branch2a"]
  assert sum(n.endswith("_branch1") for n in names) == 4
  assert "res5c_branch2c" in names
  bn = resnet.get_layer("bn2a_branch2c")
  assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)
  # Residual blocks start as the identity: last BN of each block has gamma 0.
  assert float(np.abs(np.asarray(bn.gamma)).max()) == 0.0
  assert resnet.get_layer("res5c_branch2c").output.shape[1:] == (7, 7, 2048)


def test_resnet50_arguments():
  model = models.resnet50(input_shape=(64, 64, 3), num_classes=7,
                          bn_momentum=0.99, bn_epsilon=1e-3, name="r50")
  assert model.name == "r50" and model.output_shape == (None, 7)
  assert model.get_layer("bn_conv1").momentum == pytest.approx(0.99)
  assert model.get_layer("bn_conv1").epsilon == pytest.approx(1e-3)
  assert not model.losses  # No regularizers in the models.


def test_mobilenet_v1():
  model = models.mobilenet_v1()
  layers = kernel_layers(model)
  assert len(layers) == 1 + 13 * 2 + 1
  assert [l.name for l in layers[:3]] == ["conv1", "block1_depthwise",
                                          "block1_pointwise"]
  assert sum(isinstance(l, L.DepthwiseConv2D) for l in layers) == 13
  assert model.get_layer("conv1").strides == (2, 2)
  assert model.get_layer("conv1").filters == 32
  logits = model.get_layer("logits")
  assert isinstance(logits, L.Dense) and logits.use_bias
  assert tuple(logits.kernel.shape) == (1024, 1000)
  assert n_kernel_weights(model) == 4209088
  assert n_trainable(model) == 4231976  # Same as keras.applications.MobileNet.
  assert model.get_layer("block13_pointwise").output.shape[1:] == (7, 7, 1024)


def test_mobilenet_v1_width_and_small_input():
  model = models.mobilenet_v1(width=0.5, input_shape=(32, 32, 3), num_classes=5)
  assert model.get_layer("conv1").filters == 16
  assert model.get_layer("block13_pointwise").filters == 512
  assert tuple(model(np.zeros((1, 32, 32, 3), "float32")).shape) == (1, 5)


def test_mobilenet_v2():
  model = models.mobilenet_v2()
  names = [l.name for l in kernel_layers(model)]
  assert names[:3] == ["conv1", "block1_depthwise", "block1_project"]
  assert "block1_expand" not in names and "block2_expand" in names
  assert names[-2:] == ["conv_last", "logits"]
  assert n_trainable(model) == 3504872  # Same as keras.applications.MobileNetV2.
  assert model.get_layer("block17_project").filters == 320
  assert isinstance(model.get_layer("block3_add"), L.Add)
  assert model.get_layer("block2_expand_relu").max_value is None  # Authors' ReLU.
  relu6 = models.mobilenet_v2(width=0.35, input_shape=(32, 32, 3), num_classes=3,
                              activation="relu6")
  assert float(relu6.get_layer("conv1_relu").max_value) == 6.0
  assert relu6.get_layer("conv_last").filters == 1280
  assert tuple(relu6(np.zeros((1, 32, 32, 3), "float32")).shape) == (1, 3)


def test_bad_arguments():
  with pytest.raises(ValueError):
    models.resnet50(num_classes=0)
  with pytest.raises(ValueError):
    models.lenet5(input_shape=(28, 28))
  with pytest.raises(ValueError):
    models.mobilenet_v1(width=0)
  with pytest.raises(ValueError):
    models.mobilenet_v2(activation="swish")


@pytest.mark.parametrize("builder", [models.lenet300_100, models.lenet5,
                                     models.wide_resnet])
def test_names_are_stable(builder):
  # Building twice gives the same names: no global counters leak in.
  first = [l.name for l in builder().layers]
  assert first == [l.name for l in builder().layers]
  assert len(set(first)) == len(first)
