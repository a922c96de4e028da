"""experiments/modelfile.py: weights.npz read back, every part checked: one line for a damaged or foreign file."""
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from linclf.cli import cli
from linclf.experiments import modelfile
from linclf.util.errors import LinclfError


def test_a_model_file_of_another_format_is_refused_in_one_line(one_run, tmp_path):
    """Only the current format is read: a file of another `format` (the 0.1 format's mean and std
    instead of a pipeline, say) is refused, naming the file."""
    model = modelfile.load_model(one_run)
    offset, scale = model.pipeline.scaler.fold()
    path = tmp_path / modelfile.WEIGHTS
    np.savez(path, W=model.W, b=model.b, mean=offset, std=np.float32(1 / scale), class_names=np.array(model.class_names),
             config=np.array(json.dumps(model.config)), metrics=np.array(json.dumps(model.metrics)),
             format=np.array("linclf-softmax-v1"))
    with pytest.raises(LinclfError, match=r"weights\.npz is not a linclf weights file; expected a weights\.npz") as error:
        modelfile.load_model(tmp_path)
    assert "\n" not in str(error.value)
    assert modelfile.input_shape(tmp_path) is None


def rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays.update(changes)
    for key, value in changes.items():
        if value is None:
            del arrays[key]
    np.savez(path, **arrays)


@pytest.mark.parametrize("changes, message", [
    ({"W": None}, r"no 'W' entry"),
    ({"config": np.array("{not json")}, r"'config' is not valid JSON"),
    ({"metrics": np.array("[1, 2]")}, r"'metrics' is not a JSON object"),
    ({"W": np.full((3072, 10), np.nan, np.float32)}, r"W or b holds NaN or infinite values"),
    ({"b": np.zeros(3, np.float32)}, r"do not fit"),
    ({"W": np.zeros((3072, 10), np.int64)}, r"do not fit"),
    ({"pipeline.0.std": np.float32(0.0)}, r"std that is not > 0"),
    ({"pipeline.0.mean": np.zeros(100, np.float32)}, r"the pipeline gives 100 inputs, W takes 3072"),
    ({"pipeline": np.array('{"steps": [{"step": "magic"}]}')}, r"damaged pipeline description"),
    ({"class_names": np.array(["a", "b"])}, r"class_names .* do not fit"),
])
def test_a_damaged_model_file_is_one_clear_line(one_run, tmp_path, changes, message):
    path = shutil.copytree(one_run, tmp_path / "run") / modelfile.WEIGHTS
    rewrite(path, **changes)
    with pytest.raises(LinclfError, match=message):
        modelfile.load_model(path)


def pipeline_spec(steps, input_shape=(32, 32, 3), input_kind="images"):
    """A pipeline description as a model file stores it; steps are (name, params, array names)."""
    return np.array(json.dumps({"steps": [{"step": name, "params": params, "arrays": list(arrays)}
                                          for name, params, arrays in steps],
                                "input_shape": list(input_shape), "input_kind": input_kind}))


PIXELS = ("pixels", {}, ("mean", "std"))


KMEANS = ("kmeans", {"k": 4, "patch_size": 6, "stride": 1, "patches": 1000, "iterations": 1, "seed": 0},
          ("patch_mean", "whiten", "centroids"))


KMEANS_ARRAYS = {"pipeline.0.patch_mean": np.zeros(108, np.float32), "pipeline.0.whiten": np.eye(108, dtype=np.float32),
                 "pipeline.0.centroids": np.ones((4, 108), np.float32)}


def stored_config(one_run, **changes):
    """The run's stored config (JSON) with some keys changed; a value None removes the key."""
    with np.load(one_run / modelfile.WEIGHTS) as archive:
        config = json.loads(str(archive["config"]))
    config.update(changes)
    return np.array(json.dumps({k: v for k, v in config.items() if v is not None}))


@pytest.mark.parametrize("changes, message", [
    ({"pipeline.0.mean": np.zeros(100, np.float32), "W": np.zeros((100, 10), np.float32)},
     r"its inputs \(32x32x3\) hold 3072 values, its pixels step standardizes 100"),
    ({"pipeline": pipeline_spec([PIXELS], (8,), "features")},
     r"its inputs \(8\) hold 8 values, its pixels step standardizes 3072"),
    ({"pipeline": pipeline_spec([KMEANS, ("standardize", {}, ("mean", "std"))]), **KMEANS_ARRAYS,
      "pipeline.1.mean": np.zeros(17, np.float32), "pipeline.1.std": np.ones(17, np.float32),
      "W": np.zeros((17, 10), np.float32)},
     r"its kmeans step gives 16 features, its standardize step standardizes 17"),
    ({"pipeline": pipeline_spec([KMEANS, ("standardize", {}, ("mean", "std"))], (8,), "features"), **KMEANS_ARRAYS,
      "pipeline.1.mean": np.zeros(16, np.float32), "pipeline.1.std": np.ones(16, np.float32),
      "W": np.zeros((16, 10), np.float32)},
     r"its kmeans step takes 32x32x3 images, its inputs are 8 features"),
    ({"pipeline": pipeline_spec([PIXELS, PIXELS])}, r"damaged pipeline description"),
    ({"pipeline": pipeline_spec([PIXELS], input_kind="banana")}, r"input_kind must be images or features"),
    ({"config": "val_size"}, r"is damaged: its config lacks val_size; train the model again"),
    ({"config": {"val_size": "abc"}}, r"config: val_size must be an integer in \[0, 10,000,000\], got 'abc'"),
    ({"config": {"val_size": 1.5}}, r"config: val_size must be an integer"),
    ({"config": {"train_size": [1]}}, r"config: train_size must be an integer"),
    ({"config": {"val_split": "sideways"}}, r"config: val_split must be one of tail, random"),
])
def test_a_model_file_whose_parts_do_not_fit_together_is_one_clear_line(one_run, tmp_path, changes, message):
    path = shutil.copytree(one_run, tmp_path / "run") / modelfile.WEIGHTS
    config = changes.pop("config", None)
    if config is not None:
        changes["config"] = stored_config(one_run, **({config: None} if isinstance(config, str) else config))
    rewrite(path, **changes)
    with pytest.raises(LinclfError, match=message):
        modelfile.load_model(path)


@pytest.mark.parametrize("command", [["eval", "--split", "val"], ["eval", "--split", "train"], ["eval"],
                                     ["predict"]])
@pytest.mark.parametrize("changes", [
    {"pipeline.0.mean": np.zeros(100, np.float32), "W": np.zeros((100, 10), np.float32)},
    {"config": "val_size"},
    {"config": {"val_size": "many"}},
])
def test_eval_and_predict_of_a_damaged_model_file_say_one_line(one_run, data_dir, tmp_path, command, changes):
    path = shutil.copytree(one_run, tmp_path / "run") / modelfile.WEIGHTS
    changes = dict(changes)
    config = changes.pop("config", None)
    if config is not None:
        changes["config"] = stored_config(one_run, **({config: None} if isinstance(config, str) else config))
    rewrite(path, **changes)
    image = tmp_path / "one.png"
    from PIL import Image
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    args = [command[0], path, *command[1:], *([image] if command[0] == "predict" else ["--no-plots"])]
    result = CliRunner().invoke(cli, [*map(str, args), "--data-dir", str(data_dir)])
    assert result.exit_code == 1, result.output
    line, = result.output.strip().splitlines()
    assert line.startswith(f"Error: {path} is damaged: ")


def test_a_fifo_given_as_weights_is_named_not_called_missing(tmp_path, fifo):
    from linclf import load

    fifo(tmp_path / "weights.npz")
    with pytest.raises(ValueError, match=r"cannot read .*weights.npz: it is a special file"):
        load(tmp_path / "weights.npz")
    with pytest.raises(ValueError, match=r"cannot read .*weights.npz: it is a special file"):
        load(tmp_path)
