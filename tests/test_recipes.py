"""Every run recipe: the commands its docstring gives name configs, arguments and fields that exist; its
data and tokenizer chain fit together (the tokenizer labels the dataset and split the trainer reads, the
labels a later step names are where a tokenizer preset writes them); its `runlocal` form opens its data
and its tokenizer's data on a generated corpus; the architectures are the cards'."""

import importlib
import re

import pytest

from configs import (common, hubert_base, ils_ssl_base, tokenize_ctc, tokenize_hidden, tokenize_mfcc, tokenize_pbert, wavlm_base,
                     wavlm_large)
from wavlm_jax import data
from wavlm_jax.data import builders
from wavlm_jax.models import config as config_lib
from wavlm_jax.models import params, wavlm

RECIPES = ("hubert_base", "ils_ssl_base", "tiny", "wavlm_base", "wavlm_base_plus", "wavlm_large", "tokenize_mfcc",
           "tokenize_hidden", "tokenize_pbert", "tokenize_ctc", "pbert_base", "ctc_cluster_base")
TRAIN_RECIPES = {"hubert_base:it1": "it1", "hubert_base:it2": "it2", "wavlm_base": "", "wavlm_base_plus": "",
                 "wavlm_large": "", "ils_ssl_base": "", "tiny": None, "pbert_base": "", "pbert_base:ils": "ils",
                 "ctc_cluster_base": ""}
_COMMAND = re.compile(r"--config[ =]configs/(\w+)\.py(?::([\w,]+))?")


def _get(module_name: str, arg: str | None):
  module = importlib.import_module(f"configs.{module_name}")
  return module.get_config(arg) if arg else module.get_config()


def _assert_known_dataset(name: str, where: str) -> None:
  """A dataset our builders make: an embedded-corpus config, or a folder kind (prepared by the user)."""
  kind, _, config = name.partition("/")
  if kind == "espeak_speech":
    assert config in {c.name for c in builders.EspeakSpeech.BUILDER_CONFIGS}, f"{where}: no dataset {name}"
  else:
    assert kind in builders.folder_builders() and config, f"{where}: no dataset {name}"


def _assert_known_datasets(c, where: str) -> None:
  """The datasets a config reads: its (tokenizer's) dataset, or every component of its mixture."""
  node = c if "dataset" in c else c.data
  for name in ([m[0] for m in node.mixture] if node.get("mixture") else [node.dataset]):
    _assert_known_dataset(name, where)


def _commands():
  """(recipe, config name, arg, [(field, value)]) of every command in every recipe's docstring (a command
  is a line with its backslash continuations)."""
  out = []
  for name in RECIPES:
    doc = importlib.import_module(f"configs.{name}").__doc__
    for command in re.sub(r"\\\n\s*", " ", doc).splitlines():
      for config, arg in _COMMAND.findall(command):
        fields = re.findall(r"--config\.([\w.]+)=(\S+)", command)
        out.append((name, config, arg or None, fields))
  return out


def test_docstring_commands_name_configs_arguments_and_fields_that_exist():
  commands = _commands()
  assert len(commands) >= 15
  for recipe, config, arg, fields in commands:
    c = _get(config, arg)  # an unknown module or argument raises here
    _assert_known_datasets(c, f"{recipe}: --config configs/{config}.py:{arg}")
    for field, _ in fields:
      node = c
      for part in field.split("."):
        assert part in node, f"{recipe}: the command sets --config.{field}, which {config}.py has no field for"
        node = node[part]


def test_labels_named_in_commands_are_where_a_tokenizer_preset_writes_them():
  tokenizers = (tokenize_mfcc, tokenize_hidden, tokenize_pbert, tokenize_ctc)
  workdirs = {m.get_config(p).workdir for m in tokenizers for p in tokenize_mfcc.PRESETS}
  named = [value for _, _, _, fields in _commands() for field, value in fields
           if field == "data.labels" and value.startswith("runs/")]
  assert named
  for value in named:
    assert value.endswith("/labels/train") and value[:-len("/labels/train")] in workdirs, value


@pytest.mark.parametrize("name", sorted(TRAIN_RECIPES))
def test_data_and_tokenizer_fit_together(name):
  c = _get(name.split(":")[0], TRAIN_RECIPES[name])
  config_lib.validate(c.model)
  _assert_known_datasets(c, name)
  if c.data.mixture:  # the tokenizer labels every component the trainer reads
    assert c.tokenizer.mixture == c.data.mixture and c.tokenizer.k <= c.model.num_label_classes
  elif c.tokenizer:  # the labels it makes are those the trainer reads
    assert c.tokenizer.dataset == c.data.dataset and c.data.split == c.tokenizer.fit_split
    assert c.data.split in c.tokenizer.assign_splits
    assert c.tokenizer.k <= c.model.num_label_classes
  else:
    assert c.data.labels == "" or c.data.labels.startswith("runs/")  # the docstring says which store


@pytest.mark.parametrize("name", sorted(n for n in TRAIN_RECIPES if n != "tiny"))
def test_runlocal_opens_its_data_and_its_tokenizers_data(name, espeak_data_dir):
  arg = TRAIN_RECIPES[name]
  c = _get(name.split(":")[0], f"{arg},runlocal" if arg else "runlocal")
  config_lib.validate(c.model)
  assert c.model.embed_dim == 64
  assert c.data.mixture == common.LOCAL_MIXTURE if c.data.mixture else c.data.dataset == "espeak_speech/tiny"
  with c.unlocked():
    c.data.data_dir = c.tokenizer.data_dir = espeak_data_dir
  from wavlm_jax.targets import tokenize

  if c.data.mixture:  # the components open (each is built on first use); training runs in test_mixture
    assert c.tokenizer.mixture == c.data.mixture
    for _, tok in tokenize._components(c.tokenizer):
      assert len(tokenize._source(tok, tok.fit_split)) > 0
    return
  it = data.create_iterator(c.data)
  batch = next(it)
  assert batch["audio"].shape in it.shapes() and not batch["padding_mask"].any()
  for split in c.tokenizer.assign_splits:
    assert len(tokenize._source(c.tokenizer, split)) > 0


def test_recipe_architectures():
  assert params.count(params.param_shapes(wavlm.abstract(wavlm_base.get_config().model).wavlm)) == 94_381_936
  assert params.count(params.param_shapes(wavlm.abstract(wavlm_large.get_config().model).wavlm)) == 315_453_120
  ils = ils_ssl_base.get_config().model
  assert ils.relative_position == "bucket" and ils.predict_layers == (4, 12)
  assert hubert_base.get_config("it1").model.num_label_classes == 100
  with pytest.raises(ValueError, match="unknown recipe argument"):
    hubert_base.get_config("it3")
