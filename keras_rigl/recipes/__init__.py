"""The paper's training setups as a library: configs, schedules, losses, runs.

Everything examples/train.py does is here, for your own scripts:

* `configs`: the named setups (`get_config("imagenet_resnet50")`, `Config`).
* `plan`: a config turned into step counts (`make_plan`, `Plan`).
* `schedules`: the learning rate (`WarmupPiecewiseDecay`, `WarmupCosineDecay`).
* `losses`: label-smoothed cross entropy (`SparseCrossEntropy`).
* `regularization`: weight decay and width in a model copy (`rebuild`).
* `small_dense`: the small-dense baseline's width (`small_dense_width`).
* `builders`: model and mask callback of a config (`build_training_model`,
  `make_scheduler`).
* `strategy`: `make_strategy("mirrored")` and friends (`split_cpu`).
* `xla`: the train step compiled by XLA per replica under MirroredStrategy.
* `inputs`: the run's datasets, resumable (`make_datasets`).
* `callbacks`: `StopAtStep`, `TrainingMonitor`, `make_callbacks`,
  `resume_epoch`.
* `report`: the end-of-run report (text, JSON, PNG).
* `runner`: `validate` and `run` (one whole training run), `RunOptions`,
  `SetupError`.

Example:
>>> import keras_rigl as kr
>>> config = kr.recipes.get_config("imagenet_resnet50")
>>> config.model, config.batch_size, config.label_smoothing
('resnet50', 4096, 0.1)
>>> lr = kr.recipes.WarmupPiecewiseDecay(1.6, 1564, [9384], [0.1])
>>> loss = kr.recipes.SparseCrossEntropy(label_smoothing=0.1)
"""

from keras_rigl.recipes import builders
from keras_rigl.recipes import callbacks
from keras_rigl.recipes import configs
from keras_rigl.recipes import inputs
from keras_rigl.recipes import legacy_names
from keras_rigl.recipes import losses
from keras_rigl.recipes import plan
from keras_rigl.recipes import regularization
from keras_rigl.recipes import report
from keras_rigl.recipes import runner
from keras_rigl.recipes import schedules
from keras_rigl.recipes import small_dense
from keras_rigl.recipes import strategy
from keras_rigl.recipes import xla
from keras_rigl.recipes.builders import build_model
from keras_rigl.recipes.builders import build_training_model
from keras_rigl.recipes.builders import make_scheduler
from keras_rigl.recipes.builders import sparsify_kwargs
from keras_rigl.recipes.callbacks import make_callbacks
from keras_rigl.recipes.callbacks import resume_epoch
from keras_rigl.recipes.callbacks import StopAtStep
from keras_rigl.recipes.callbacks import TrainingMonitor
from keras_rigl.recipes.configs import CONFIGS
from keras_rigl.recipes.configs import Config
from keras_rigl.recipes.configs import get_config
from keras_rigl.recipes.errors import SetupError
from keras_rigl.recipes.inputs import make_datasets
from keras_rigl.recipes.losses import SparseCrossEntropy
from keras_rigl.recipes.plan import make_plan
from keras_rigl.recipes.plan import Plan
from keras_rigl.recipes.regularization import rebuild
from keras_rigl.recipes.runner import run
from keras_rigl.recipes.runner import RunOptions
from keras_rigl.recipes.runner import validate
from keras_rigl.recipes.schedules import WarmupCosineDecay
from keras_rigl.recipes.schedules import WarmupPiecewiseDecay
from keras_rigl.recipes.small_dense import small_dense_width
from keras_rigl.recipes.strategy import make_strategy
