"""Config loading: defaults, YAML, overrides, and errors that name key, rule and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_mlp.config import Config, ConfigError, from_dict, keys, load_config, to_dict

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_design_card():
    c = load_config()
    assert c.model.hidden == [1024] and c.model.activation == "relu"
    assert c.data.dataset == "mnist" and c.data.validation == 5000
    assert {
        "training.epochs",
        "training.batch_size",
        "training.lr",
        "training.seed",
        "model.hidden",
        "model.activation",
        "data.dataset",
        "data.dir",
        "output.dir",
        "training.momentum",
        "training.nesterov",
        "training.l2",
        "training.schedule",
        "training.warmup_epochs",
        "training.patience",
    } <= set(keys())


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    if path.name in ("sweep.yaml", "record.yaml"):  # sweep files live beside their configs
        with pytest.raises(ConfigError, match="is a sweep file, not a config: run mlp sweep"):
            load_config(path)
        return
    assert isinstance(load_config(path), Config)


def test_file_then_overrides(tmp_path):
    c = load_config(
        write(tmp_path, "training:\n  lr: 0.2\n  epochs: 3\n"),
        ["training.lr=0.05", "model.hidden=[512, 256]", "training.nesterov=true"],
    )
    assert c.training.lr == 0.05 and c.training.epochs == 3
    assert c.model.hidden == [512, 256] and c.training.nesterov is True
    assert c.training.batch_size == 128  # untouched default


def test_int_and_exponent_notation_are_accepted_for_float(tmp_path):
    c = load_config(overrides=["training.lr=1"])
    assert c.training.lr == 1.0 and isinstance(c.training.lr, float)
    assert load_config(overrides=["training.l2=1e-3"]).training.l2 == 0.001
    assert load_config(write(tmp_path, "training:\n  lr: 5E+1\n")).training.lr == 50.0
    with pytest.raises(ConfigError, match="must be an integer, got '1e3'"):
        load_config(overrides=["training.epochs=1e3"])


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "training:\n  learning_rate: 0.1\n",
            "unknown key 'training.learning_rate' (did you mean 'training.lr'?)",
        ),
        ("trainig:\n  lr: 0.1\n", "unknown key 'trainig' (did you mean 'training'?)"),
        ("training:\n  dropout: 0.1\n", "did you mean 'model.dropout'?"),
        ("training:\n  lr: -1\n", "training.lr must be > 0, got -1"),
        ("training:\n  lr: fast\n", "training.lr must be a number, got 'fast' (str)"),
        ("training:\n  epochs: 2.5\n", "training.epochs must be an integer, got 2.5"),
        ("training:\n  nesterov: 1\n", "training.nesterov must be true or false, got 1"),
        ("training:\n  epochs: true\n", "training.epochs must be an integer, got True"),
        (
            "model:\n  activation: gelu\n",
            "model.activation must be one of relu, sigmoid, tanh, got 'gelu'",
        ),
        ("model:\n  hidden: 1024\n", "model.hidden must be a non-empty list of int, got 1024"),
        (
            "model:\n  hidden: [1024, 0]\n",
            "model.hidden must be a list of sizes > 0, got [1024, 0]",
        ),
        ("model:\n  hidden: [1024, x]\n", "model.hidden[1] must be an integer, got 'x' (str)"),
        ("training: 5\n", "training must be a mapping, got 5"),
        ("- 1\n- 2\n", "must be a mapping of sections, got list"),
        ("training:\n  lr: [0.1\n", "not valid YAML at line"),
        (
            "data:\n  dataset: cifar\n",
            "data.dataset must be one of mnist, fashion-mnist, got 'cifar'",
        ),
        (
            "data:\n  validation: 0\ntraining:\n  patience: 3\n",
            "training.patience must be 0 when data.validation is 0 (early stopping watches the "
            "validation loss), got 3",
        ),
    ],
)
def test_errors_name_key_rule_and_value(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "item, message",
    [
        ("training.lr", "expected KEY=VALUE"),
        ("training.lrr=0.1", "unknown key 'training.lrr' (did you mean 'training.lr'?)"),
        ("training=3", "training is a section; give a mapping of its keys"),
        ("training.lr.x=3", "unknown key 'training.lr.x'"),
        ("training.momentum=1.5", "training.momentum must be in [0, 1), got 1.5"),
    ],
)
def test_override_errors(item, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(overrides=[item])
    assert message in str(info.value)
    assert f"--set {item}" in str(info.value)


def test_a_rule_joining_two_keys_is_checked_after_each_override():
    assert load_config(overrides=["training.patience=3"]).training.patience == 3
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["training.patience=3", "data.validation=0"])
    assert str(info.value).startswith("--set data.validation=0: training.patience must be 0 when")


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
    assert load_config(write(tmp_path, "")) == Config()


def test_round_trip_through_dict():
    c = load_config(overrides=["model.hidden=[300, 100]", "data.augment.rotate=10"])
    assert from_dict(to_dict(c)) == c


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "# café\ntraining:\n  lr: 0.1\n".encode("latin-1"),
            "not UTF-8 text (byte 0xe9 at line 1); save the config as UTF-8",
        ),
        (bytes(range(256)) * 4, "not UTF-8 text (byte 0x80 at line 2)"),
        (b"\x00\x01\x02 binary", "not valid YAML"),
        (b"training: [unclosed\n", "not valid YAML at line 2"),
    ],
)
def test_a_file_that_is_not_a_utf8_yaml_config_is_one_line(tmp_path, content, message):
    from click.testing import CliRunner

    from mnist_mlp.cli import main

    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    result = CliRunner().invoke(main, ["train", "--config", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in result.output
