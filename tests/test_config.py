import numpy as np
import pytest

from linclf import config, config_files
from linclf.util.errors import LinclfError, short_repr


def test_every_default_passes_its_own_rule():
    """The defaults, each solver's included, pass the checks a user's values go through, and a
    completed configuration completes to itself."""
    assert config.validate(config.DEFAULTS) == config.DEFAULTS
    for solver, defaults in config.SOLVER_DEFAULTS.items():
        assert config.validate(defaults) == defaults
        completed = config.complete({"solver": solver})
        assert config.complete(completed) == completed


@pytest.mark.parametrize("text, expected", [("1e-3", 1e-3), ("3.0e-2", 3e-2), (" 0.5 ", 0.5), (2, 2.0)])
def test_numbers_written_as_strings_are_accepted(text, expected):
    assert config.check_value("lr", text) == expected


@pytest.mark.parametrize("key, value, message", [
    ("lr", -1, r"lr must be a number in \(0, 1000\], got -1"),
    ("lr", 0, r"lr must be a number in \(0"),
    ("momentum", 1.0, r"momentum must be a number in \[0, 1\), got 1.0"),
    ("epochs", 2.5, r"epochs must be an integer in \[1, 10,000\], got 2.5"),
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
    assert "valid keys: solver, tol, max_iter, reg" in message


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
    ("lr: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),  # pathological YAML: still one line
    ("lr: 1" + "0" * 5000 + "\n", "bad YAML: Exceeds the limit"),
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
    assert config.resolve(path) == config.complete({}) == {**config.DEFAULTS, **config.SOLVER_DEFAULTS["lbfgs"],
                                                           "solver": "lbfgs"}


def billion_laughs(levels=9, key="lr"):
    """A few hundred bytes of YAML whose value expands to 9**levels strings through nested aliases."""
    names = "abcdefghijklmnop"
    lines = [f"{key}:", "- &a [" + ",".join(["lol"] * 9) + "]"]
    for level in range(1, levels):
        lines.append(f"- &{names[level]} [" + ",".join([f"*{names[level - 1]}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    assert len(path.read_bytes()) < 400
    with pytest.raises(LinclfError, match=r"bomb.yaml: YAML aliases expand to more than 10000 values; write"):
        config.resolve(path)


@pytest.mark.parametrize("text", ["lr: &a [*a]\n", "lr: &a {x: *a}\n"])
def test_an_alias_inside_its_own_anchor_is_refused(tmp_path, text):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(LinclfError, match="YAML aliases expand to more than"):
        config_files.load_yaml(path)


def test_a_few_honest_aliases_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("lr: &rate 3.0e-3\nreg: *rate\n")
    assert config.resolve(path)["reg"] == 3e-3


def nested(levels):
    value = [1.5] * 9
    for _ in range(levels):
        value = [value] * 9  # shared, so cheap to build but 9**levels long written out
    return value


@pytest.mark.parametrize("value, expected", [
    (-1, "-1"), ("lots", "'lots'"), (2.5, "2.5"),
    ("x" * 1000, "'" + "x" * 17 + "..." + "x" * 18 + "'"),
    (nested(12), "[[[...], [...], [...], [...], ...], [[...], [...], [...],..."),
    ({f"k{i}": i for i in range(100)}, "{'k0': 0, 'k1': 1, 'k10': 10, 'k11': 11, ...}"),
])
def test_shown_is_short_and_never_formats_the_whole_value(value, expected):
    text = short_repr(value)
    assert text == expected and len(text) <= 60


def test_a_huge_value_in_an_error_message_is_cut_short():
    with pytest.raises(LinclfError, match=r"lr must be a number in \(0, 1000\], got \[\[\[") as caught:
        config.check_value("lr", nested(12))
    assert len(str(caught.value)) < 120
    with pytest.raises(LinclfError, match=r"unknown key 'y{17}\.\.\.y{18}'; valid keys") as caught:
        config.check_key("y" * 10_000)
    assert len(str(caught.value)) < 400  # the key is cut short; the list of valid keys is fixed


def test_a_config_file_that_is_not_text_or_too_big_or_not_a_file(tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(LinclfError, match=r"is not UTF-8 text"):
        config_files.load_yaml(binary)
    big = tmp_path / "big.yaml"
    big.write_text("lr: " + "1" * 2_000_000 + "\n")
    with pytest.raises(LinclfError, match=r"bytes; a config is at most 1,000,000"):
        config_files.load_yaml(big)
    with pytest.raises(LinclfError, match=r"/dev/zero is not a regular file"):
        config_files.load_yaml("/dev/zero")


def test_a_key_written_twice_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("epochs: 1\nepochs: 2\n")
    with pytest.raises(LinclfError, match=r"key 'epochs' appears twice"):
        config_files.load_yaml(path)


def test_kmeans_settings_without_kmeans_features_are_refused():
    with pytest.raises(LinclfError, match=r"command line: kmeans_k apply only with features: kmeans"):
        config.resolve(flags={"kmeans_k": "5"})
    assert config.resolve(flags={"kmeans_k": "5", "features": "kmeans"})["kmeans_k"] == 5


def test_mirror_pairs_need_an_even_k():
    check_consistent = config.complete
    with pytest.raises(LinclfError, match="kmeans_symmetry: mirror needs an even kmeans_k"):
        check_consistent({**config.DEFAULTS, "features": "kmeans", "kmeans_k": 801, "kmeans_symmetry": "mirror",
                          "kmeans_pool": 3})
    check_consistent({**config.DEFAULTS, "features": "kmeans", "kmeans_k": 800, "kmeans_symmetry": "mirror",
                      "kmeans_pool": 3})
    with pytest.raises(LinclfError, match="apply only with features: kmeans"):
        check_consistent({**config.DEFAULTS, "kmeans_pool": 3})


@pytest.mark.parametrize("extra,message", [
    ({"kmeans_symmetry": "mirror", "kmeans_pool": 2}, r"mirror-symmetric regions \(patch_size 6 at stride 1: 27 patch "
                                                      r"positions per side\): kmeans_pool must be one of 1, 3, 5, got 2"),
    ({"kmeans_symmetry": "mirror", "kmeans_pool": 3, "stride": 4}, "stride must divide 32 - patch_size = 26, got stride 4"),
    ({"kmeans_pool": 6, "patch_size": 16, "stride": 16}, r"kmeans_pool must be at most the patch positions per side .*got 6"),
    ({"kmeans_alpha": 0.5}, r"kmeans_alpha applies only with kmeans_encoding: soft \(kmeans_encoding is triangle\)"),
])
def test_settings_where_mirror_pairs_would_not_be_exact_or_regions_empty_are_refused(extra, message):
    with pytest.raises(LinclfError, match=message):
        config.complete({"features": "kmeans", **extra})


@pytest.mark.parametrize("extra,dim", [({"kmeans_symmetry": "mirror", "kmeans_pool": 3}, 9 * 1600 // 2),
                                       ({"kmeans_symmetry": "mirror", "kmeans_pool": 3, "stride": 2}, 9 * 1600 // 2),
                                       ({"kmeans_pool": 4}, 16 * 1600),
                                       ({"kmeans_encoding": "soft", "kmeans_alpha": 0.5}, 4 * 2 * 1600),
                                       ({"kmeans_encoding": "soft", "kmeans_symmetry": "mirror", "kmeans_pool": 3},
                                        9 * 1600)])
def test_exact_mirror_settings_and_plain_pools_are_accepted_and_set_the_feature_count(extra, dim):
    from linclf.features import pipeline

    checked = config.complete({"features": "kmeans", **extra})
    assert pipeline.build(checked, "images", (32, 32, 3)).feature_steps[0].dim == dim


@pytest.mark.parametrize("extra,refused", [
    ({"kmeans_k": 1001, "kmeans_patches": 1000}, r"kmeans_k must be at most kmeans_patches \(k-means starts from "
                                                 r"kmeans_k distinct patches\): 1000, got 1001"),
    ({"kmeans_k": 1000, "kmeans_patches": 1000}, None),
    ({"kmeans_k": 4002, "kmeans_patches": 1000, "kmeans_symmetry": "mirror", "kmeans_pool": 3},
     r"kmeans_symmetry: mirror .* kmeans_k must be at most 4 x kmeans_patches = 4000, got 4002"),
    ({"kmeans_k": 4000, "kmeans_patches": 1000, "kmeans_symmetry": "mirror", "kmeans_pool": 3}, None),
])
def test_more_centroids_than_patches_are_refused_before_any_work(extra, refused):
    """What kmeans.fit would refuse after sampling (a ValueError traceback) is refused when the
    settings are resolved; the largest k accepted does fit."""
    from linclf.features import kmeans

    cfg = {**config.DEFAULTS, "features": "kmeans", **extra}
    if refused:
        with pytest.raises(LinclfError, match=refused):
            config.complete(cfg)
        return
    config.complete(cfg)
    images = np.random.default_rng(0).integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    state = kmeans.fit(images, cfg["kmeans_k"], num_patches=cfg["kmeans_patches"], iterations=1,
                       mirror=cfg["kmeans_symmetry"] == "mirror", threads=1)
    assert state["centroids"].shape == (cfg["kmeans_k"], 108)


def test_features_command_refuses_more_centroids_than_patches_in_one_line(tmp_path):
    from click.testing import CliRunner

    from linclf.cli import cli

    path = tmp_path / "km.yaml"
    path.write_text("features: kmeans\nkmeans_k: 2000\nkmeans_patches: 1000\n")
    result = CliRunner().invoke(cli, ["features", str(path), "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"Error: {path}: kmeans_k must be at most kmeans_patches")


def test_kmeans_params_keep_the_feature_cache_keys_and_stand_for_their_settings():
    plain = config.complete({"features": "kmeans"})
    assert config.kmeans_params(plain) == {"k": 1600, "patch_size": 6, "stride": 1, "patches": 400_000,
                                           "iterations": 50, "seed": 0}
    soft = config.complete({"features": "kmeans", "kmeans_encoding": "soft", "kmeans_symmetry": "mirror",
                            "kmeans_pool": 3})
    assert config.kmeans_params(soft) == {"k": 1600, "patch_size": 6, "stride": 1, "patches": 400_000,
                                          "iterations": 50, "seed": 0, "pool": 3, "mirror": True,
                                          "encoding": "soft", "alpha": 0.25}
    for cfg in (plain, soft):
        assert config.kmeans_settings(config.kmeans_params(cfg)) == {key: cfg[key] for key in config.FEATURE_KEYS}
