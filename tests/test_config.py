import pytest
import yaml

from selectlens.config import (
    Config, ConfigError, apply_overrides, config_from_dict, load_config, presets, resolve_config_path,
)

ORIGINAL_YAML = """
data:
  train_samp_per_class: 10000
  d_d: 5
  N: 21
  data_alphas: [0.1, 0.8]
  train_prop: 0.8
  classification: False
  data_gen_factor: 4
model:
  family: gpt2
  n_embd: 64
  n_layer: 3
  n_head: 2
training:
  batch_size: 32
  lr: 0.0004
  save_every_epochs: 50
  epochs: 2000
out_dir: ./models
wandb:
  name: model_selection
  project: icl-model-selection
  entity: someone
  notes: original run
"""


def test_original_yaml_loads_unchanged(tmp_path):
    p = tmp_path / "model_selection.yaml"
    p.write_text(ORIGINAL_YAML)
    cfg = load_config(p)
    assert cfg.data.N == 21 and cfg.data.d_d == 5 and cfg.data.data_alphas == [0.1, 0.8]
    assert cfg.data.candidates == [0.1, 0.8]  # defaults to the noise levels, as in the original
    assert cfg.model.n_embd == 64 and cfg.training.lr == pytest.approx(4e-4)
    assert cfg.wandb.project == "icl-model-selection"
    assert cfg.data.noise_scale == 0.8 and cfg.seed == 0 and cfg.dtype == "float32"


def test_shipped_presets_match_the_original_values():
    assert {"default", "model_selection", "classification"} <= set(presets())
    ms = load_config("model_selection")
    assert (ms.data.N, ms.data.d_d, ms.data.data_alphas, ms.data.train_samp_per_class) == (21, 5, [0.1, 0.8], 10000)
    assert (ms.training.batch_size, ms.training.lr, ms.data.train_prop) == (32, 4e-4, 0.8)
    cl = load_config("classification")
    assert cl.data.classification and (cl.data.N, cl.data.d_d, cl.data.data_gen_factor) == (64, 16, 4)
    assert cl.data.data_alphas == [0.125, 0.25, 0.5, 1, 2, 4, 8]
    assert load_config(None).data == load_config("default").data
    assert resolve_config_path("configs/classification.yaml").exists()


def test_candidate_alphas_separate_from_noise_levels():
    cfg = config_from_dict({"data": {"data_alphas": [0.1, 0.8], "candidate_alphas": [0.01, 1, 10]}})
    assert cfg.data.candidates == [0.01, 1.0, 10.0] and cfg.data.n_features == 4


def test_overrides_are_dotted_and_typed():
    cfg = load_config("default", ["training.lr=1e-3", "data.data_alphas=[0.5, 2]", "data.classification=true"])
    assert cfg.training.lr == pytest.approx(1e-3)
    assert cfg.data.data_alphas == [0.5, 2.0] and cfg.data.classification is True
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"data": {"Nn": 3}}, "unknown config key data.Nn for data.task selection (did you mean data.N?)"),
        ({"trainng": {}}, "unknown config key trainng (did you mean training?)"),
        ({"data": {"N": 1}}, "data.N"),
        ({"data": {"N": "many"}}, "data.N"),
        ({"data": {"data_alphas": []}}, "data_alphas must not be empty"),
        ({"data": {"data_alphas": [0.1, -1]}}, "data.data_alphas"),
        ({"data": {"candidate_alphas": [0]}}, "candidate_alphas"),
        ({"data": {"train_prop": 1.0}}, "data.train_prop"),
        ({"data": {"train_prop": 0}}, "data.train_prop"),
        ({"training": {"lr": "fast"}}, "training.lr"),
        ({"training": {"lr": float("nan")}}, "training.lr"),
        ({"model": {"n_embd": 63, "n_head": 2}}, "divisible"),
        ({"dtype": "float16"}, "dtype"),
        ({"device": "gpu0"}, "device"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_configs_give_one_line_naming_the_key(raw, fragment):
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_file_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_round_trips_through_yaml():
    cfg = load_config("classification", ["seed=7"])
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg and isinstance(again, Config)


@pytest.mark.parametrize(
    "args",
    [
        ["data", "--out", "x.safetensors", "--set", "data.N=1"],
        ["data", "--out", "x.safetensors", "--set", "data.data_alphas=[]"],
        ["data", "--out", "x.safetensors", "--set", "data.typo=1"],
        ["data", "--out", "x.safetensors", "--config", "no_such_config"],
        ["data", "--out", "x.safetensors", "--sequences", "0"],
        ["data", "--out", "x.safetensors", "--no-such-flag"],
        ["data"],
        ["bench", "datagen", "--task", "nonsense"],
    ],
)
def test_cli_bad_input_is_one_line_exit_2(cli, tmp_path, args):
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "x.safetensors").exists()
