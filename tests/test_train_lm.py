"""examples/train_lm.py end to end on a tiny text, and keras_rigl.data.text."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from examples import train_lm
from keras_rigl.data import text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the quick brown fox jumps over a lazy dog while seven birds sing "
         "softly in old green trees near the river").split()


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("text")
  rng = np.random.default_rng(0)
  for name in ("a.txt", "b"):
    with open(folder / name, "w") as f:
      f.write(" ".join(rng.choice(WORDS, size=900)))
  with open(folder / "b.dat", "wb") as f:  # A fortunes index: skipped.
    f.write(b"\0\1\2" * 100)
  return str(folder)


def _tiny(text_dir, **overrides):
  values = dict(embedding_dim=8, gru_units=16, readout=(16, 8), d_model=16,
                num_layers=1, num_heads=2, ff_dim=16, sequence_length=16,
                batch_size=8, train_steps=6, steps_per_epoch=3, update_freq=2,
                eval_windows=16, data_dir=text_dir, verbose=0)
  values.update(overrides)
  return train_lm.LMConfig(**values)


def test_corpus_split_is_deterministic_and_skips_index_files(text_dir):
  corpus = text.load_corpus(text_dir, held_out_fraction=0.2)
  assert [os.path.basename(f) for f in corpus.files] == ["a.txt", "b"]
  again = text.load_corpus(text_dir, held_out_fraction=0.2)
  np.testing.assert_array_equal(corpus.train, again.train)
  total = sum(os.path.getsize(f) for f in corpus.files)
  assert len(corpus.train) + len(corpus.held_out) == total
  assert abs(len(corpus.held_out) / total - 0.2) < 0.01
  x, y = next(iter(text.char_lm_dataset(corpus.train, 10, 4)))
  np.testing.assert_array_equal(x.numpy()[:, 1:], y.numpy()[:, :-1])


def test_missing_corpus_is_a_clear_error(tmp_path):
  with pytest.raises(text.CorpusNotFoundError, match="make corpus"):
    text.load_corpus(str(tmp_path / "nowhere"))
  with pytest.raises(text.CorpusNotFoundError, match="no text files"):
    text.load_corpus(str(tmp_path))
  with pytest.raises(ValueError, match="held_out_fraction"):
    text.load_corpus(str(tmp_path), held_out_fraction=1.5)


@pytest.mark.parametrize("model, method", [
    ("gru", "dense"), ("gru", "small_dense"), ("gru", "static"), ("gru", "set"),
    ("gru", "rigl"), ("gru", "pruning"), ("transformer", "rigl"),
    ("transformer", "pruning")])
def test_runs_end_to_end(text_dir, model, method):
  report = train_lm.run(_tiny(text_dir, model=model, method=method))
  assert report["steps"] == 6
  assert math.isfinite(report["held_out_bpc"]) and 0 < report["held_out_bpc"] < 9
  sparse = report["sparse_layers"]
  if method in ("dense", "small_dense"):
    assert sparse["nnz"] == sparse["params"]
  else:
    assert sparse["nnz"] == pytest.approx(0.25 * sparse["params"], abs=8)
  if method == "small_dense":
    assert 0 < report["small_dense_width"] < 1
    assert sparse["params"] < train_lm.sparse_weight_count(
        train_lm.build_dense(_tiny(text_dir, model=model)))
  assert report["training_flops"] > 0
  assert report["flops"]["sequence_length"] == 16
  if model == "transformer":
    names = {row["name"] for row in report["sparsity_table"]}
    assert "block0_attention" in names


def test_outputs_and_resume(text_dir, tmp_path):
  model_dir = str(tmp_path / "run")
  report = train_lm.run(_tiny(text_dir, method="rigl", model_dir=model_dir))
  for name in ("report.json", "report.png", "history.json"):
    assert os.path.exists(os.path.join(model_dir, name)), name
  with open(os.path.join(model_dir, "report.json")) as f:
    saved = json.load(f)
  assert saved["held_out_bpc"] == pytest.approx(report["held_out_bpc"])
  assert [h["step"] for h in saved["history"]] == [3, 6]
  # Started again with the same flags: resumes at the end, trains no more.
  again = train_lm.run(_tiny(text_dir, method="rigl", model_dir=model_dir))
  assert again["steps"] == 6
  assert again["held_out_bpc"] == pytest.approx(report["held_out_bpc"], rel=1e-5)


@pytest.mark.parametrize("overrides, message", [
    ({"method": "lottery"}, "--method"),
    ({"sparsity": 1.0}, "--sparsity"),
    ({"model": "transformer", "d_model": 10, "num_heads": 4}, "--num_heads"),
    ({"train_steps": 0}, "--train_steps"),
    ({"pruning_begin_step": 5, "pruning_end_step": 4}, "--pruning_begin_step"),
    ({"end_step": 100}, "--end_step"),
])
def test_bad_config_is_refused_before_training(text_dir, overrides, message):
  with pytest.raises(ValueError, match=message):
    train_lm.run(_tiny(text_dir, **overrides))


def test_too_little_text_for_a_batch(text_dir):
  with pytest.raises(ValueError, match="too short for one batch"):
    train_lm.run(_tiny(text_dir, batch_size=512))


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_lm.py"),
                         *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_trains_and_reports(text_dir, tmp_path):
  result = _cli(f"--data_dir={text_dir}", "--gru_units=8", "--readout=8",
                "--embedding_dim=4", "--sequence_length=8", "--batch_size=4",
                "--train_steps=2", "--steps_per_epoch=2", "--update_freq=1",
                "--eval_windows=8", "--verbose=0", "--method=set",
                f"--model_dir={tmp_path}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "held-out bits per character" in result.stdout
  assert os.path.exists(tmp_path / "report.png")


def test_cli_missing_corpus(tmp_path):
  result = _cli(f"--data_dir={tmp_path / 'missing'}")
  assert result.returncode == 2
  assert "make corpus" in result.stderr


def test_flags_to_config():
  values = {f.name: f.default for f in dataclasses.fields(train_lm.LMConfig)}
  flag_values = types.SimpleNamespace(**dict(values, readout=["32", "16"], verbose="0"))
  config = train_lm.config_from_flags(flag_values)
  assert config.readout == (32, 16) and config.verbose == 0
  flag_values.readout = ["128", "abc"]
  with pytest.raises(ValueError, match="--readout"):
    train_lm.config_from_flags(flag_values)
