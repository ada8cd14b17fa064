"""Input pipelines: Fashion-MNIST (offline), CIFAR-10 and ImageNet (tfds).

Example:

>>> from keras_rigl import data
>>> info = data.dataset_info("fashion_mnist")
>>> train = data.load("fashion_mnist", "train", batch_size=128, seed=0)
>>> test = data.load("fashion_mnist", "eval", batch_size=128)
>>> info.num_train, info.input_shape
(60000, (28, 28, 1))
"""

from keras_rigl.data import fashion_mnist
from keras_rigl.data import text
from keras_rigl.data.common import DataNotFoundError
from keras_rigl.data.common import DatasetInfo
from keras_rigl.data.loader import DATASETS
from keras_rigl.data.loader import dataset_info
from keras_rigl.data.loader import distribute
from keras_rigl.data.loader import load
from keras_rigl.data.loader import steps_per_epoch

# Fashion-MNIST as numpy arrays, straight from the idx files.
load_fashion_mnist_arrays = fashion_mnist.load_arrays

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "DatasetInfo",
    "dataset_info",
    "distribute",
    "load",
    "load_fashion_mnist_arrays",
    "steps_per_epoch",
]
