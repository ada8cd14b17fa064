"""The named training setups; they live in `keras_rigl.recipes.configs`.

Kept so that `from examples import configs` keeps working.

Example:
>>> from examples import configs
>>> configs.get("imagenet_resnet50").batch_size
4096
"""

from keras_rigl.recipes.configs import *  # pylint: disable=wildcard-import,unused-wildcard-import
from keras_rigl.recipes.configs import CONFIGS, DEFAULT, Config, for_model, get, get_config  # pylint: disable=unused-import
