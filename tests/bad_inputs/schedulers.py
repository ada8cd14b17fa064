"""Bad scheduler arguments and bad RigL data: each fails before the first step, clearly."""

import numpy as np
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from tests.bad_inputs import BadInput

_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(16, 12)).astype("float32")
_Y = (_X[:, 0] > 0).astype("int32")


def _data(x=_X, y=_Y, batch=8):
  """Two batches of a 12-feature, 2-class problem (y may be None: x only)."""
  items = x if y is None else (x, y)
  return tf.data.Dataset.from_tensor_slices(items).batch(batch)


def _model(sparse=True, mask_init="random"):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((12,), name="features"),
                            keras.layers.Dense(8, activation="relu", name="fc1"),
                            keras.layers.Dense(2, name="logits")])
  if sparse:
    model = kr.sparsify(model, 0.8, "uniform", mask_init=mask_init)
  return model


def _fit(callback, model=None, train=None, **compile_kwargs):
  """Compiles a tiny sparse MLP and fits it for 2 steps with `callback`."""
  model = model or _model()
  model.compile(keras.optimizers.SGD(0.1),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                **compile_kwargs)
  model.fit(_data() if train is None else train, epochs=1, verbose=0,
            callbacks=[callback])


def _rigl(data=None, **kwargs):
  kwargs.setdefault("end_step", 10)
  return kr.RigLScheduler(_data() if data is None else data, **kwargs)


def _fit_rigl(data, **kwargs):
  return lambda: _fit(_rigl(data, **kwargs))


ROWS = [
    # --- scheduler arguments, refused at construction ---------------------------
    BadInput("schedulers/update_freq_zero", lambda: _rigl(update_freq=0), ValueError,
             ("update_freq", ">= 1", "update_freq=1"), "RigLScheduler(data, update_freq=0)"),
    BadInput("schedulers/update_freq_float", lambda: _rigl(update_freq=2.5), ValueError,
             ("update_freq", "integer"), "RigLScheduler(data, update_freq=2.5)"),
    BadInput("schedulers/drop_fraction_above_one", lambda: _rigl(drop_fraction=1.5),
             ValueError, ("drop_fraction", "[0, 1]"), "drop_fraction=1.5 (a fraction above 1)"),
    BadInput("schedulers/drop_fraction_bool", lambda: _rigl(drop_fraction=True), ValueError,
             ("drop_fraction", "float"), "drop_fraction=True (a bool, not a number)"),
    BadInput("schedulers/drop_fraction_nan", lambda: _rigl(drop_fraction=float("nan")),
             ValueError, ("drop_fraction", "[0, 1]"), "drop_fraction=float('nan')"),
    BadInput("schedulers/drop_fraction_string", lambda: _rigl(drop_fraction="0.3"),
             ValueError, ("drop_fraction", "float"), "drop_fraction='0.3' (a string)"),
    BadInput("schedulers/schedule_unknown_name",
             lambda: _rigl(drop_fraction_schedule="linear"), ValueError,
             ("drop_fraction_schedule", "cosine"), "drop_fraction_schedule='linear'"),
    BadInput("schedulers/schedule_bad_exponent",
             lambda: _rigl(drop_fraction_schedule="exponential_x"), ValueError,
             ("drop_fraction_schedule", "exponential_3"),
             "drop_fraction_schedule='exponential_x' (exponent not a number)"),
    BadInput("schedulers/schedule_callable_above_one",
             lambda: _rigl(drop_fraction_schedule=lambda step: 1.5), ValueError,
             ("drop_fraction_schedule", "step 0", "[0, 1]", "clip"),
             "a callable drop_fraction_schedule that returns 1.5"),
    BadInput("schedulers/schedule_callable_nan",
             lambda: _rigl(drop_fraction_schedule=lambda step: float("nan")), ValueError,
             ("drop_fraction_schedule", "nan", "[0, 1]"),
             "a callable drop_fraction_schedule that returns NaN"),
    BadInput("schedulers/schedule_callable_negative_later",
             lambda: _fit(_rigl(update_freq=2, drop_fraction_schedule=lambda s: 0.3 - s / 10)),
             ValueError, ("drop_fraction_schedule", "step 4", "[0, 1]", "clip"),
             "a callable drop_fraction_schedule that goes below 0 later in the window "
             "(refused at on_train_begin)"),
    BadInput("schedulers/grow_init_unknown", lambda: _rigl(grow_init="ones"), ValueError,
             ("grow_init", "zeros"), "grow_init='ones'"),
    BadInput("schedulers/end_before_begin", lambda: _rigl(begin_step=10, end_step=5),
             ValueError, ("end_step", "begin_step", "swap"), "begin_step=10, end_step=5"),
    BadInput("schedulers/begin_negative", lambda: _rigl(begin_step=-1), ValueError,
             ("begin_step", ">= 0"), "begin_step=-1"),
    BadInput("schedulers/grad_accumulation_zero", lambda: _rigl(grad_accumulation_steps=0),
             ValueError, ("grad_accumulation_steps", ">= 1"), "grad_accumulation_steps=0"),
    BadInput("schedulers/seed_string", lambda: _rigl(seed="abc"), ValueError,
             ("seed", "integer", "seed=0"), "seed='abc'"),
    BadInput("schedulers/set_int_first_positional", lambda: kr.SETScheduler(10), ValueError,
             ("data", "update_freq=10", "keyword"),
             "SETScheduler(10): the first positional argument is the unused `data`"),
    BadInput("schedulers/set_seed_float", lambda: kr.SETScheduler(update_freq=10, seed=1.5),
             ValueError, ("seed", "integer"), "SETScheduler(seed=1.5)"),
    BadInput("schedulers/pruning_initial_above_final",
             lambda: kr.MagnitudePruningScheduler(0.9, 0.2, 0, 100), ValueError,
             ("initial_sparsity", "final_sparsity", "swap"),
             "MagnitudePruningScheduler(0.9, 0.2, ...): initial above final sparsity"),
    BadInput("schedulers/pruning_power_negative",
             lambda: kr.MagnitudePruningScheduler(0.0, 0.5, power=-1), ValueError,
             ("power", "> 0"), "MagnitudePruningScheduler(power=-1)"),
    BadInput("schedulers/pruning_power_zero",
             lambda: kr.MagnitudePruningScheduler(0.0, 0.5, power=0), ValueError,
             ("power", "> 0"), "MagnitudePruningScheduler(power=0)"),
    BadInput("schedulers/pruning_final_one", lambda: kr.MagnitudePruningScheduler(0.0, 1.0),
             ValueError, ("final_sparsity", "[0, 1)"), "final_sparsity=1.0 (no weights left)"),
    BadInput("schedulers/pruning_initial_bool", lambda: kr.MagnitudePruningScheduler(False, 0.5),
             ValueError, ("initial_sparsity", "float"), "initial_sparsity=False"),
    BadInput("schedulers/pruning_schedule_not_callable",
             lambda: kr.MagnitudePruningScheduler(schedule=3), ValueError,
             ("schedule", "callable"), "MagnitudePruningScheduler(schedule=3)"),
    BadInput("schedulers/pruning_initial_above_layer_target",
             lambda: _fit(kr.MagnitudePruningScheduler(0.95, None, 0, 10, update_freq=1),
                          model=_model(mask_init="dense")),
             ValueError, ("initial_sparsity", "final_sparsity"),
             "initial_sparsity above the layers' own targets (final_sparsity=None)"),
    # --- at fit: the model and the run --------------------------------------------
    BadInput("schedulers/no_sparse_layers", lambda: _fit(_rigl(), model=_model(sparse=False)),
             ValueError, ("SparseWrapper", "sparsify"),
             "a RigLScheduler on a model without SparseWrapper layers"),
    BadInput("schedulers/end_step_none_unknown_length",
             lambda: _fit(kr.RigLScheduler(_data()),
                          train=_data().filter(lambda x, y: True)),
             ValueError, ("end_step", "explicitly"),
             "end_step=None with a training set of unknown length"),
    BadInput("schedulers/steps_per_execution_not_dividing",
             lambda: _fit(_rigl(update_freq=3), steps_per_execution=2), ValueError,
             ("steps_per_execution", "update_freq", "multiple"),
             "steps_per_execution=2 with update_freq=3"),
    # --- RigL data --------------------------------------------------------------
    BadInput("rigl/redistribution_without_data",
             lambda: kr.RigLScheduler(redistribution="momentum"), ValueError,
             ("redistribution", "data="), "RigLScheduler(redistribution='momentum') "
             "without data"),
    BadInput("rigl/accumulation_without_data",
             lambda: kr.RigLScheduler(grad_accumulation_steps=4), ValueError,
             ("grad_accumulation_steps", "data="), "RigLScheduler(grad_accumulation_steps=4) "
             "without data"),
    BadInput("rigl_data/bare_numpy_array", lambda: kr.RigLScheduler(_X), ValueError,
             ("RigLScheduler data", "numpy", "from_tensor_slices"),
             "RigLScheduler(x_train): a bare numpy array"),
    BadInput("rigl_data/numpy_tuple", lambda: kr.RigLScheduler((_X, _Y)), ValueError,
             ("RigLScheduler data", "numpy", "from_tensor_slices"),
             "RigLScheduler((x_train, y_train)): numpy arrays, not batches"),
    BadInput("rigl_data/integer", lambda: kr.RigLScheduler(42), ValueError,
             ("first positional argument", "update_freq=42"), "RigLScheduler(42)"),
    BadInput("rigl_data/empty_iterator", lambda: kr.RigLScheduler(iter([])), ValueError,
             ("RigLScheduler data", "empty"), "RigLScheduler(iter([])): nothing to read"),
    BadInput("rigl_data/empty_dataset", _fit_rigl(_data().take(0)), ValueError,
             ("RigLScheduler data", "empty", "batch"), "an empty dataset (0 batches)"),
    BadInput("rigl_data/empty_unknown_length", _fit_rigl(_data().filter(lambda x, y: False)),
             ValueError, ("RigLScheduler data", "empty"),
             "a dataset of unknown length that yields nothing"),
    BadInput("rigl_data/x_only", _fit_rigl(_data(y=None)), ValueError,
             ("RigLScheduler data", "(x, y)", "labels"), "batches of x only, no labels"),
    BadInput("rigl_data/unbatched",
             _fit_rigl(tf.data.Dataset.from_tensor_slices((_X, _Y))), ValueError,
             ("RigLScheduler data", "not batched", ".batch("), "a dataset that is not batched"),
    BadInput("rigl_data/wrong_feature_shape", _fit_rigl(_data(x=_X[:, :10])), ValueError,
             ("RigLScheduler data", "shape", "features"), "10 features for a 12-feature model"),
    BadInput("rigl_data/string_labels",
             _fit_rigl(_data(y=np.array(["a", "b"] * 8))), ValueError,
             ("RigLScheduler data", "string labels", "integer"), "labels given as strings"),
    BadInput("rigl_data/one_hot_with_sparse_loss",
             _fit_rigl(_data(y=np.eye(2, dtype="float32")[_Y])), ValueError,
             ("RigLScheduler data", "loss", "label format"),
             "one-hot labels while the model's loss is sparse_categorical_crossentropy"),
    BadInput("rigl_data/dict_wrong_keys",
             _fit_rigl(tf.data.Dataset.from_tensor_slices(({"pixels": _X}, _Y)).batch(8)),
             ValueError, ("RigLScheduler data", "keys", "input names"),
             "x as a dict whose keys are not the model's input names"),
    BadInput("rigl_data/too_many_inputs", _fit_rigl(_data(x=(_X, _X))), ValueError,
             ("RigLScheduler data", "one tensor per model input"),
             "two feature tensors for a one-input model"),
]
