import pytest

from linclf import config
from linclf.errors import LinclfError


def test_every_default_has_a_rule_and_passes_it():
    assert set(config.DEFAULTS) == set(config.RULES)
    assert config.validate(config.DEFAULTS) == config.DEFAULTS


@pytest.mark.parametrize("text, expected", [("1e-3", 1e-3), ("3.0e-2", 3e-2), (" 0.5 ", 0.5), (2, 2.0)])
def test_numbers_written_as_strings_are_accepted(text, expected):
    assert config.check_value("lr", text) == expected


@pytest.mark.parametrize("key, value, message", [
    ("lr", -1, r"lr must be a number in \(0, 1000\], got -1"),
    ("lr", 0, r"lr must be a number in \(0"),
    ("momentum", 1.0, r"momentum must be a number in \[0, 1\), got 1.0"),
    ("epochs", 2.5, r"epochs must be an integer in \[1, 10000\], got 2.5"),
    ("epochs", True, r"epochs must be an integer"),
    ("reg", "lots", r"reg must be a number in \[0, 1000\], got 'lots'"),
    ("batch_size", float("nan"), r"batch_size must be an integer"),
])
def test_bad_values_name_the_key_the_range_and_the_value(key, value, message):
    with pytest.raises(LinclfError, match=message):
        config.check_value(key, value)


def test_integer_valued_floats_become_ints():
    assert config.check_value("epochs", "1e2") == 100
    assert isinstance(config.check_value("epochs", 3.0), int)


@pytest.mark.parametrize("key, suggestion", [("learning_rate", None), ("lrr", "lr"), ("batchsize", "batch_size")])
def test_unknown_keys_are_rejected_with_the_closest_valid_name(key, suggestion):
    with pytest.raises(LinclfError, match=f"unknown key '{key}'") as caught:
        config.validate({key: 1}, source="x.yaml")
    message = str(caught.value)
    assert message.startswith("x.yaml: ")
    assert (f"did you mean '{suggestion}'" in message) == (suggestion is not None)
    assert "valid keys: epochs, batch_size" in message


def test_yaml_overrides_defaults_and_flags_override_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-2\nreg: 5.0e-4\nepochs: 3\n")
    resolved = config.resolve(path, {"epochs": "7", "seed": None})
    assert resolved["lr"] == 1e-2 and resolved["reg"] == 5e-4
    assert resolved["epochs"] == 7
    assert resolved["seed"] == config.DEFAULTS["seed"]
    assert list(resolved) == list(config.DEFAULTS)


@pytest.mark.parametrize("text, message", [
    ("lr: [1, 2\n", r"bad YAML at line 2"),
    ("- 1\n- 2\n", r"expected a mapping of key: value, got list"),
])
def test_bad_yaml_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(LinclfError, match=message):
        config.resolve(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(LinclfError, match="config file not found"):
        config.resolve(tmp_path / "nope.yaml")


def test_empty_yaml_means_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert config.resolve(path) == config.DEFAULTS
