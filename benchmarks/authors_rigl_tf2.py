r"""Runs the authors' TF2 trainer (google-research/rigl, rigl_tf2) on local Fashion-MNIST.

For the side-by-side comparison in docs/baselines.md. Their code is not part
of this project: this driver imports it from a checkout you provide
(`--rigl_src`, the folder that holds `rigl/rigl_tf2`) and needs `gin-config`
(`pip install gin-config`). It runs their `train_model` with
`mlp_configs/{scratch,set,rigl}.gin` on top of `dense.gin`, unchanged except:
- data: local Fashion-MNIST gz files instead of tfds 'mnist' (same preprocessing: /255);
- masks: a random mask per wrapped layer with exactly floor(s*N) zeros (seeded), instead of
  loading a pruning checkpoint (their mlp configs load /tmp/sparse_spectrum/ckpt-11719);
- optimizer: tf_keras legacy SGD (their code calls get_slot_names, the pre-2.11 optimizer API);
- stubs for jax (hessian only) and pyglib.timer (Google-internal timer).

  git clone https://github.com/google-research/rigl /tmp/rigl
  pip install gin-config
  python benchmarks/authors_rigl_tf2.py --rigl_src=/tmp/rigl --method=rigl --seed=0
  python benchmarks/authors_rigl_tf2.py --rigl_src=/tmp/rigl --method=scratch --seed=0 \
      --keras_rigl_masks     # the masks keras_rigl draws for this seed

Each run prints and writes OUT/METHOD_sSEED[_krmasks].json: test accuracy and
loss, and per wrapped layer (units without inputs, largest fan-in, active
weights).
"""
import gzip, json, os, sys, time, types
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SRC = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--rigl_src=")), None)
if not _SRC or not os.path.isdir(os.path.join(_SRC, "rigl", "rigl_tf2")):
  sys.exit("pass --rigl_src=DIR, a checkout of github.com/google-research/rigl "
           "(DIR/rigl/rigl_tf2 must exist)")
sys.path[:0] = [_SRC, _REPO]
import tensorflow as tf
import keras  # noqa: imported before the jax stub (Keras 3 probes jax)
tf.keras.layers  # noqa
# Stubs for modules their train.py imports but this run never uses.
jax = types.ModuleType("jax"); jax.jit = None
jsp = types.ModuleType("jax.scipy"); jspl = types.ModuleType("jax.scipy.linalg"); jspl.eigh = None
jax.scipy = jsp; jsp.linalg = jspl
class _Timer:
  def Start(self): self.t = time.time()
  def GetDuration(self): return time.time() - self.t
pyglib = types.ModuleType("pyglib"); timer = types.ModuleType("pyglib.timer"); timer.Timer = _Timer
pyglib.timer = timer
sys.modules.update({"jax": jax, "jax.scipy": jsp, "jax.scipy.linalg": jspl, "pyglib": pyglib,
                    "pyglib.timer": timer})
import numpy as np
import tensorflow as tf
tf.keras.optimizers.SGD = tf.keras.optimizers.legacy.SGD
import gin
from absl import app, flags, logging
from rigl.rigl_tf2 import utils
from rigl.rigl_tf2 import train as rtrain

flags.DEFINE_enum("method", "rigl", ["scratch", "set", "rigl"], "Their MLP config.")
flags.DEFINE_float("sparsity", 0.98, "Sparsity of every wrapped layer.")
flags.DEFINE_string("out", "/tmp/rigl_tf2_runs", "Output folder.")
flags.DEFINE_string("rigl_src", None, "Checkout of google-research/rigl.")
flags.DEFINE_integer("total_steps", 11719, "Training steps (theirs: 11719).")
flags.DEFINE_bool("keras_rigl_masks", False, "Use the masks keras_rigl draws for this seed (layers fc1, fc2, logits).")
F = flags.FLAGS

def _read(name):
  with gzip.open(f"/usr/share/datasets/fashion-mnist/{name}.gz") as f:
    return f.read()

def fashion(split):
  prefix = "train" if split == "train" else "t10k"
  x = np.frombuffer(_read(f"{prefix}-images-idx3-ubyte"), np.uint8, offset=16).reshape(-1, 28, 28, 1)
  y = np.frombuffer(_read(f"{prefix}-labels-idx1-ubyte"), np.uint8, offset=8).astype(np.int64)
  return tf.data.Dataset.from_tensor_slices((x.astype(np.float32) / 255.0, y)).cache()

def main(_):
  tf.random.set_seed(F.seed)
  cfg = {"scratch": "scratch", "set": "set", "rigl": "rigl"}[F.method]
  gin.parse_config_files_and_bindings(
      [os.path.join(F.rigl_src, "rigl/rigl_tf2/mlp_configs/dense.gin"),
       os.path.join(F.rigl_src, f"rigl/rigl_tf2/mlp_configs/{cfg}.gin")],
      ["network.mask_init_path = None", f"training.total_steps = {F.total_steps}",
       "training.save_freq = 1000000"])
  pruning_params = utils.get_pruning_params()
  model = utils.get_network(pruning_params, (28, 28, 1), 10)
  rng = np.random.default_rng(F.seed)
  wrapped = [l for l in model.layers if isinstance(l, utils.PRUNING_WRAPPER)]
  for layer, ours in zip(wrapped, ["fc1", "fc2", "logits"]):
    weight, mask, _ = layer.pruning_vars[0]
    if F.keras_rigl_masks:  # The same masks as keras_rigl's sparsify(seed=F.seed).
      from keras_rigl.masks import name_seed, random_mask
      mask.assign(random_mask(mask.shape, F.sparsity, name_seed(F.seed, ours + "/kernel")))
    else:
      n = int(np.prod(mask.shape)); zeros = int(np.floor(F.sparsity * n))
      flat = np.ones(n, np.float32); flat[rng.permutation(n)[:zeros]] = 0
      mask.assign(flat.reshape(mask.shape))
    weight.assign(weight * mask)
  tag = f"{F.method}_s{F.seed}" + ("_krmasks" if F.keras_rigl_masks else "")
  logdir = os.path.join(F.out, tag)
  tf.io.gfile.makedirs(logdir)
  start = time.time()
  rtrain.train_model(model, fashion("train"), fashion("test"), logdir)
  loss, acc = rtrain.test_model(model, fashion("test"))
  dead = []
  for layer in model.layers:
    if isinstance(layer, utils.PRUNING_WRAPPER):
      m = layer.pruning_vars[0][1].numpy()
      fan = m.reshape(-1, m.shape[-1]).sum(0)
      dead.append([int((fan == 0).sum()), int(fan.max()), int(m.sum())])
  result = {"method": F.method, "seed": F.seed, "keras_rigl_masks": F.keras_rigl_masks, "test_accuracy": float(acc), "test_loss": float(loss),
            "seconds": time.time() - start, "dead_units_maxfanin_nnz": dead}
  print(json.dumps(result))
  with open(os.path.join(F.out, tag + ".json"), "w") as f:
    json.dump(result, f)

if __name__ == "__main__":
  app.run(main)
