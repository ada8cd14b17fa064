"""Reference architectures of the RigL paper, as Functional Keras models."""

from keras_rigl.models.lenet import lenet300_100, lenet5
from keras_rigl.models.mobilenet import mobilenet_v1, mobilenet_v2
from keras_rigl.models.resnet import resnet50
from keras_rigl.models.wrn import wide_resnet

__all__ = ["lenet300_100", "lenet5", "wide_resnet", "resnet50", "mobilenet_v1",
           "mobilenet_v2"]
