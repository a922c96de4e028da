"""The Python API: scikit-learn estimators over the same core as the CLI."""
import json
import pickle

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("sklearn", reason="the test extra installs scikit-learn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from linclf import KMeansFeatures, SoftmaxClassifier, SoftmaxSweep, load, load_cifar10, plot_model  # noqa: E402
from linclf.cli import cli  # noqa: E402
from linclf.config import DEFAULTS, SOLVER_DEFAULTS  # noqa: E402
from linclf.data import sources  # noqa: E402
from linclf.experiments import jobs, runfolders  # noqa: E402
from linclf.util.errors import LinclfError  # noqa: E402

SMALL = {"epochs": 3, "batch_size": 16, "val_size": 50}


def blobs(num=300, dim=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, num)
    return (rng.normal(size=(num, dim)) + 1.5 * np.eye(classes, dim)[y] * 3).astype(np.float32), y


# As constructed (solver lbfgs, the validation rows a tenth of the data), and with solver sgd's
# schedule. No check is expected to fail.
@parametrize_with_checks([SoftmaxClassifier(), SoftmaxSweep(),
                          SoftmaxClassifier(val_size=0, lr=0.1, epochs=30, batch_size=16),
                          SoftmaxSweep(grid={"lr": [0.03, 0.1]}, val_size=5, val_split="random", epochs=30,
                                       batch_size=16)])
def test_scikit_learn_conventions(estimator, check):
    check(estimator)


def test_fit_on_images_is_the_clis_training_path(data_dir):
    """The same settings give the same weights as jobs.train_group, the path `linclf train` takes."""
    X, y, _, _, _ = load_cifar10(data_dir)
    clf = SoftmaxClassifier(**SMALL).fit(X, y)
    outcome = jobs.train_group(sources.cifar10(data_dir), [{**DEFAULTS, **SMALL}])
    np.testing.assert_array_equal(clf.model_.W, outcome.results[0].W)
    assert clf.model_.pipeline.params() == outcome.pipeline.params()
    assert clf.history_["val_accuracy"] == outcome.results[0].history["val_accuracy"]


@pytest.mark.parametrize("kind", ["images", "features"])
def test_coef_and_intercept_are_on_the_raw_inputs(data_dir, kind):
    X, y = (load_cifar10(data_dir)[:2] if kind == "images" else blobs())
    clf = SoftmaxClassifier(**SMALL).fit(X, y)
    flat = np.asarray(X, np.float64).reshape(len(X), -1)
    np.testing.assert_allclose(flat @ clf.coef_.T + clf.intercept_, clf._scores(X), rtol=1e-3, atol=1e-3)


def test_string_labels_and_probabilities():
    X, y = blobs()
    names = np.array(["cat", "dog", "emu"])[y]
    clf = SoftmaxClassifier(lr=0.05, epochs=10, val_size=30).fit(X, names)
    assert list(clf.classes_) == ["cat", "dog", "emu"] and clf.score(X, names) > 0.9
    proba = clf.predict_proba(X[:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    assert list(clf.predict(X[:5])) == list(clf.classes_[proba.argmax(axis=1)])


def test_saved_and_loaded_models_score_as_eval_does(data_dir, tmp_path):
    X, y, X_test, y_test, names = load_cifar10(data_dir)
    clf = SoftmaxClassifier(**SMALL).fit(X, y)
    folder = clf.save(tmp_path / "mine", class_names=names)
    result = CliRunner().invoke(cli, ["eval", str(folder), "--data-dir", str(data_dir), "--json", "--no-plots"])
    assert result.exit_code == 0, result.output
    accuracy = json.loads(result.stdout)["accuracy"]
    assert clf.score(X_test, y_test) == pytest.approx(accuracy)
    loaded = load(folder)
    assert loaded.score(X_test, y_test) == pytest.approx(accuracy)
    assert loaded.get_params()["lr"] == SOLVER_DEFAULTS["sgd"]["lr"] and loaded.get_params()["epochs"] == SMALL["epochs"]


def test_string_classes_survive_save_and_load(tmp_path):
    X, y = blobs()
    names = np.array(["cat", "dog", "emu"])[y]
    clf = SoftmaxClassifier(lr=0.05, epochs=5, val_size=30).fit(X, names)
    loaded = load(clf.save(tmp_path / "run"))
    assert list(loaded.predict(X[:20])) == list(clf.predict(X[:20]))


@pytest.mark.slow
def test_the_sweep_picks_what_linclf_sweep_picks(hard_data_dir, tmp_path):
    grid = {"lr": [2e-6, 5e-6, 1e-4], "reg": [1e-4, 1.0]}
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump({"name": "g", "base": dict(SMALL), "grid": grid}))
    result = CliRunner().invoke(cli, ["sweep", str(grid_file), "--json", "--quiet", "--data-dir", str(hard_data_dir),
                                      "--runs-dir", str(tmp_path / "runs")])
    rows = json.loads(result.stdout)["results"]
    assert len({r["val_accuracy"] for r in rows}) > 2  # the results spread
    X, y, X_test, y_test, _ = load_cifar10(hard_data_dir)
    with pytest.warns(UserWarning, match="value of the grid.s lr axis") if rows[0]["lr"] in (2e-6, 1e-4) else _nothing():
        sweep = SoftmaxSweep(grid=grid, **SMALL).fit(X, y)
    assert sweep.best_params_ == {"lr": rows[0]["lr"], "reg": rows[0]["reg"]}
    assert sweep.best_score_ == pytest.approx(rows[0]["val_accuracy"])
    ranks = sweep.cv_results_["rank_test_score"]
    assert sorted(ranks) == list(range(1, 7)) and ranks[sweep.best_index_] == 1
    best = load(tmp_path / "runs" / "g")  # a sweep folder: its best run
    assert best.score(X_test, y_test) == pytest.approx(sweep.score(X_test, y_test))
    (tmp_path / "runs" / "g" / "sweep.json").unlink()  # no record: a folder of runs, ranked as a runs dir
    assert load(tmp_path / "runs" / "g").score(X_test, y_test) == pytest.approx(sweep.score(X_test, y_test))
    refused = CliRunner().invoke(cli, ["eval", "--best", "--sweep", "g", "--runs-dir", str(tmp_path / "runs"),
                                       "--data-dir", str(hard_data_dir)])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    assert "g holds no sweep.json: it is not a sweep's folder" in refused.output


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_explicit_validation_rows_equal_the_tail_split():
    X, y = blobs(400)
    given = SoftmaxSweep(grid={"lr": [0.01, 0.1]}, epochs=3, batch_size=32).fit(X[:350], y[:350], X[350:], y[350:])
    tail = SoftmaxSweep(grid={"lr": [0.01, 0.1]}, epochs=3, batch_size=32, val_size=50).fit(X, y)
    np.testing.assert_array_equal(given.cv_results_["mean_test_score"], tail.cv_results_["mean_test_score"])


def test_refit_trains_the_best_on_every_row():
    X, y = blobs(400)
    sweep = SoftmaxSweep(grid={"lr": [0.01, 0.1]}, epochs=3, batch_size=32, val_size=50, refit=True).fit(X, y)
    assert sweep.best_estimator_.get_params()["val_size"] == 0
    assert sweep.best_estimator_.history_["val_accuracy"] == [None] * 3
    assert sweep.best_estimator_.get_params()["lr"] == sweep.best_params_["lr"]


def test_works_with_scikit_learn_tools():
    X, y = blobs(240)
    clf = SoftmaxClassifier(lr=0.05, epochs=5, val_size=20)
    scores = cross_val_score(clf, X, y, cv=3)
    assert scores.min() > 0.8
    search = GridSearchCV(clf, {"reg": [1e-4, 1e-1]}, cv=2).fit(X, y)
    assert search.best_params_["reg"] in (1e-4, 1e-1)
    again = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_array_equal(again.predict(X), search.best_estimator_.predict(X))
    assert clone(clf).get_params() == clf.get_params()


def test_about_as_accurate_as_logistic_regression():
    X, y = blobs(600, dim=20, classes=4, seed=3)
    ours = SoftmaxClassifier(lr=0.05, epochs=30, val_size=100, reg=1e-4).fit(X, y).score(X[-100:], y[-100:])
    theirs = LogisticRegression(max_iter=500).fit(X[:-100], y[:-100]).score(X[-100:], y[-100:])
    assert ours >= theirs - 0.03


@pytest.mark.parametrize("change, error, message", [
    (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), y), ValueError, "NaN"),
    (lambda X, y: (X, np.zeros_like(y)), ValueError, "at least 2 classes"),
    (lambda X, y: (X.astype(np.float64) * 1e300, y), ValueError, "float32"),
])
def test_bad_training_data_is_one_clear_error(change, error, message):
    X, y = change(*blobs())
    with pytest.raises(error, match=message):
        SoftmaxClassifier(val_size=30).fit(X, y)


def test_bad_inputs_at_predict_and_bad_parameters(tmp_path):
    import scipy.sparse

    X, y = blobs()
    clf = SoftmaxClassifier(val_size=30, epochs=2).fit(X, y)
    with pytest.raises(ValueError, match="X has 5 features, but SoftmaxClassifier is expecting 8 features"):
        clf.predict(X[:, :5])
    with pytest.raises(TypeError, match="[Ss]parse"):
        clf.predict(scipy.sparse.csr_matrix(X))
    with pytest.raises(ValueError, match="lr must be a number in \\(0, 1000\\], got -1"):
        SoftmaxClassifier(lr=-1).fit(X, y)
    with pytest.raises(ValueError, match="Invalid parameter 'lrr'"):
        SoftmaxClassifier().set_params(lrr=1)
    hint = r"val_size must be in \[0, 299\] for this data, got 1000; set val_size=0 \(train on every row"
    with pytest.raises(ValueError, match=hint):
        SoftmaxClassifier(val_size=1000).fit(X, y)
    with pytest.raises(ValueError, match=hint):
        SoftmaxSweep(grid={"lr": [0.1, 0.2]}, val_size=1000).fit(X, y)
    with pytest.raises(ValueError, match="unknown key 'lrr'"):
        SoftmaxSweep(grid={"lrr": [1]}).fit(X, y)
    with pytest.raises(ValueError, match="n_centroids must be an integer"):  # the parameter's name, not kmeans_k
        KMeansFeatures(n_centroids=0).fit(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(LinclfError, match="weights file not found"):  # linclf's own errors are ValueErrors
        load(tmp_path / "nothing.npz")


def test_kmeans_features_in_a_pipeline(data_dir, tmp_path):
    X, y, X_test, y_test, _ = load_cifar10(data_dir)
    features = KMeansFeatures(n_centroids=8, stride=4, n_patches=2000, max_iter=3, pool=2, memory=tmp_path / "cache")
    model = make_pipeline(features, SoftmaxClassifier(**SMALL))
    model.fit(X, y)
    assert model[0].transform(X_test).shape == (len(X_test), 32)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # train and test features, cached
    np.testing.assert_allclose(model[0].transform(X_test), model[0].step_.transform(X_test), rtol=1e-6,
                               atol=1e-6)  # from the cache (float32 rounding: see encoder.encode)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(X_test), model.predict(X_test))
    assert clone(features).get_params() == features.get_params()
    assert features.__sklearn_tags__().input_tags.two_d_array is False
    with pytest.raises(ValueError, match=r"takes \(N, 32, 32, 3\) uint8 images"):
        KMeansFeatures(n_centroids=8).fit(np.zeros((10, 3072)))


def test_kmeans_features_refuse_settings_that_cannot_work(data_dir):
    X = load_cifar10(data_dir)[0]
    with pytest.raises(ValueError, match="mirror needs an even"):
        KMeansFeatures(n_centroids=7, symmetry="mirror").fit(X)


def test_load_refuses_what_is_no_model(tmp_path):
    with pytest.raises(ValueError, match="weights file not found"):
        load(tmp_path / "nothing.npz")


def test_load_cifar10_shapes(data_dir):
    X, y, X_test, y_test, names = load_cifar10(data_dir)
    assert X.shape == (200, 32, 32, 3) and X.dtype == np.uint8 and y.dtype == np.int64
    assert X_test.shape == (50, 32, 32, 3) and len(names) == 10 and names[0] == "airplane"
    assert runfolders.default_runs_dir().name == "runs"


def test_a_model_saved_without_names_evaluates_on_cifar10(data_dir, tmp_path):
    X, y, X_test, y_test, _ = load_cifar10(data_dir)
    clf = SoftmaxClassifier(**SMALL).fit(X, y)
    result = CliRunner().invoke(cli, ["eval", str(clf.save(tmp_path / "run")), "--data-dir", str(data_dir), "--json",
                                      "--no-plots"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(clf.score(X_test, y_test))


@pytest.mark.slow
def test_the_readme_python_example_runs(data_dir, tmp_path, monkeypatch):
    """The README's Python section, as a notebook user runs it (shorter training, tiny data)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"## From Python.*?```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace('load_cifar10("data")', f'load_cifar10({str(data_dir)!r})')
    code = code.replace("epochs=30", "epochs=3, val_size=50, batch_size=16")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "templates.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "runs" / "notebook" / "weights.npz").is_file()


def test_kmeans_features_parameters_are_the_kmeans_settings():
    from linclf.estimators import KMEANS_NAMES

    params = KMeansFeatures().get_params()
    assert {params[name] for name in KMEANS_NAMES.values()} == {DEFAULTS[key] for key in KMEANS_NAMES}
    assert all(params[name] == DEFAULTS[key] for key, name in KMEANS_NAMES.items())


def test_numpy_numbers_object_labels_and_grid_names():
    X, y = blobs(240)
    search = GridSearchCV(SoftmaxClassifier(val_size=20), {"epochs": np.arange(2, 4)}, cv=2, error_score="raise")
    assert search.fit(X, y).best_params_["epochs"] in (2, 3)
    words = np.array(["cat", "dog", "emu"], dtype=object)[y]
    assert list(SoftmaxClassifier(val_size=20, epochs=2).fit(X, words).classes_) == ["cat", "dog", "emu"]
    with pytest.raises(ValueError, match="Unknown label type"):
        SoftmaxClassifier(val_size=20).fit(X, np.array([1, "a"] * 120, dtype=object))
    sweep = SoftmaxSweep(grid={"random_state": [0, 1]}, epochs=2, val_size=20).fit(X, y)
    assert set(sweep.best_params_) == {"random_state"} and "param_random_state" in sweep.cv_results_


def test_object_labels_survive_save_and_load(tmp_path):
    X, y = blobs()
    words = np.array(["cat", "dog", "emu"], dtype=object)[y]
    clf = SoftmaxClassifier(val_size=30, epochs=2).fit(X, words)
    assert list(load(clf.save(tmp_path / "run")).predict(X[:10])) == list(clf.predict(X[:10]))


@pytest.mark.slow
def test_ties_are_broken_as_the_cli_sweep_breaks_them(data_dir, tmp_path):
    """lr_decay has no effect in one epoch: the runs tie exactly; both pick by the run ids' text."""
    grid = {"lr_decay": [0.9, 0.5]}
    grid_file = tmp_path / "t.yaml"
    grid_file.write_text(yaml.safe_dump({"name": "t", "base": {**SMALL, "epochs": 1}, "grid": grid}))
    result = CliRunner().invoke(cli, ["sweep", str(grid_file), "--json", "--quiet", "--data-dir", str(data_dir),
                                      "--runs-dir", str(tmp_path / "runs")])
    rows = json.loads(result.stdout)["results"]
    assert rows[0]["val_accuracy"] == rows[1]["val_accuracy"] and rows[0]["val_loss"] == rows[1]["val_loss"]
    X, y, _, _, _ = load_cifar10(data_dir)
    sweep = SoftmaxSweep(grid=grid, **{**SMALL, "epochs": 1}).fit(X, y)
    assert sweep.best_params_["lr_decay"] == rows[0]["lr_decay"]


def test_a_small_data_set_says_which_parameter_to_change():
    X, y = blobs()
    with pytest.raises(ValueError, match="set val_size=0"):
        SoftmaxClassifier(val_size=300).fit(X, y)


@pytest.mark.parametrize("rows, held_out", [(9, 0), (15, 1), (300, 30), (20_000, 1000)])
def test_the_default_validation_rows_scale_with_the_data(rows, held_out):
    X, y = blobs(num=rows)
    clf = SoftmaxClassifier().fit(X, y)
    assert clf.model_.metrics["split"]["val_size"] == held_out == clf.model_.config["val_size"]
    assert (clf.model_.metrics["val_accuracy"] is None) == (held_out == 0)


@pytest.mark.parametrize("change, message", [
    (lambda X: X.astype(np.float32) / 255, r"images must be \(N, 32, 32, 3\) uint8"),
    (lambda X: X.transpose(0, 3, 1, 2), r"images must be \(N, 32, 32, 3\) uint8"),
    (lambda X: X[0], r"images must be \(N, 32, 32, 3\) uint8"),
    (lambda X: X.reshape(len(X), -1), r"was fitted on \(N, 32, 32, 3\) uint8 images; X of shape \(50, 3072\) is not"),
])
def test_images_of_another_form_say_what_is_expected(data_dir, change, message):
    X, y, X_test, _, _ = load_cifar10(data_dir)
    clf = SoftmaxClassifier(**SMALL).fit(list(X), list(y))  # lists of images are arrays too
    with pytest.raises(ValueError, match=message):
        clf.predict(change(X_test))


def test_plot_model_takes_a_pipeline_and_refuses_other_things(data_dir, tmp_path):
    X, y, _, _, _ = load_cifar10(data_dir)
    model = make_pipeline(SoftmaxClassifier(**SMALL)).fit(X, y)
    assert plot_model(model, tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TypeError, match="plot_model takes a SoftmaxClassifier"):
        plot_model(LogisticRegression(), tmp_path / "l.png")


def test_save_refuses_links_files_and_folders_of_other_things(tmp_path):
    X, y = blobs()
    clf = SoftmaxClassifier(val_size=30, epochs=2).fit(X, y)
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "weights.npz").write_text("mine")
    for name, message in (("link", "is a symbolic link"), ("afile", "is not a folder"), ("notes", "is not empty")):
        with pytest.raises(ValueError, match=message):
            clf.save(tmp_path / name)
    assert not any((tmp_path / "target").iterdir()) and (tmp_path / "notes" / "weights.npz").read_text() == "mine"
    folder = clf.save(tmp_path / "run")
    with pytest.raises(ValueError, match="is not empty"):
        clf.save(folder)
    assert clf.save(folder, overwrite=True) == folder
    with pytest.raises(ValueError, match="class_names must be 3 distinct names"):
        clf.save(tmp_path / "other", class_names=["x", "x", "y"])


def test_plot_names_and_grid_names_are_checked(tmp_path):
    X, y = blobs()
    clf = SoftmaxClassifier(val_size=30, epochs=2).fit(X, y)
    with pytest.raises(ValueError, match="class_names must be 3 distinct names"):
        plot_model(clf, tmp_path / "t.png", class_names=["a"])
    with pytest.raises(ValueError, match="grid names random_state twice"):
        SoftmaxSweep(grid={"seed": [1, 2], "random_state": [3]}, val_size=30).fit(X, y)


def test_a_feature_cache_that_cannot_be_written_costs_only_the_cache(data_dir, tmp_path):
    X = load_cifar10(data_dir)[0][:20]
    (tmp_path / "afile").write_text("mine")
    features = KMeansFeatures(n_centroids=8, stride=4, n_patches=2000, max_iter=2, memory=tmp_path / "afile").fit(X)
    with pytest.warns(UserWarning, match="features not cached"):
        out = features.transform(X)
    np.testing.assert_array_equal(out, features.step_.transform(X))


def test_a_saved_and_loaded_model_keeps_its_feature_names(tmp_path):
    X, y = blobs()
    clf = SoftmaxClassifier(val_size=30, epochs=2).fit(X, y)
    clf.feature_names_in_ = np.array([f"f{i}" for i in range(X.shape[1])], dtype=object)  # as fit on a DataFrame
    loaded = load(clf.save(tmp_path / "run"))
    assert list(loaded.feature_names_in_) == list(clf.feature_names_in_)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        loaded.predict(X)


def test_kmeans_features_of_rows_say_they_take_images(data_dir):
    X, _, X_test, _, _ = load_cifar10(data_dir)
    features = KMeansFeatures(n_centroids=8, stride=4, n_patches=2000, max_iter=2).fit(X)
    with pytest.raises(ValueError, match=r"takes \(N, 32, 32, 3\) uint8 images, got \(50, 3072\)"):
        features.transform(X_test.reshape(len(X_test), -1))


@pytest.mark.parametrize("dtype", ["datetime64[s]", "timedelta64[ms]"])
def test_dates_and_durations_are_no_features(dtype):
    X, y = blobs()
    with pytest.raises(ValueError, match=rf"X of dtype {dtype.split('[')[0]}.*: features must be numbers"):
        SoftmaxClassifier(val_size=30, epochs=2).fit((X * 1000).astype(np.int64).astype(dtype), y)


def test_an_alpha_that_makes_every_feature_zero_is_refused(data_dir):
    X = load_cifar10(data_dir)[0]
    with pytest.raises(ValueError, match=r"^alpha 100 makes every feature zero.*choose a smaller alpha"):
        KMeansFeatures(n_centroids=8, stride=4, n_patches=2000, max_iter=2, encoding="soft", alpha=100).fit(X)


def test_cached_features_replaced_by_zeros_are_computed_again(data_dir, tmp_path):
    X = load_cifar10(data_dir)[0][:20]
    features = KMeansFeatures(n_centroids=8, stride=4, n_patches=2000, max_iter=2, memory=tmp_path / "c").fit(X)
    expected = features.transform(X)
    cached, = (tmp_path / "c").glob("kmeans-*")
    if cached.suffix == ".npy":
        np.save(cached, np.zeros_like(expected))
    else:  # the features zeroed, their checksum kept
        with np.load(cached) as archive:
            np.savez(cached, **{**{name: archive[name] for name in archive.files}, "features": np.zeros_like(expected)})
    np.testing.assert_array_equal(features.transform(X), expected)


def test_plot_model_of_a_kmeans_pipeline_draws_its_centroids(data_dir, tmp_path):
    X, y, _, _, _ = load_cifar10(data_dir)
    model = make_pipeline(KMeansFeatures(n_centroids=8, stride=4, n_patches=2000, max_iter=2),
                          SoftmaxClassifier(**SMALL)).fit(X, y)
    assert plot_model(model, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_the_best_estimator_says_how_many_rows_validated_it():
    X, y = blobs(400)
    sweep = SoftmaxSweep(grid={"lr": [0.01, 0.1]}, epochs=2, batch_size=32, val_size=500).fit(X[:300], y[:300],
                                                                                            X[300:], y[300:])
    params = sweep.best_estimator_.get_params()
    assert (params["val_size"], params["val_split"], params["train_size"]) == (100, "tail", 0)


@pytest.mark.parametrize("params, message", [
    ({"solver": "lbfgs", "lr": 0.1}, "lr is a setting of solver sgd's schedule"),
    ({"tol": 1e-5, "epochs": 3}, "tol is a setting of solver lbfgs"),
    ({"tol": 0}, r"tol must be a number in \(0, 1\], got 0"),
    ({"max_iter": 0}, r"max_iter must be an integer in \[1, 100,000\], got 0"),
])
def test_solver_settings_that_contradict_raise_value_error(params, message):
    X, y = blobs()
    with pytest.raises(ValueError, match=message):
        SoftmaxClassifier(**params).fit(X, y)
    with pytest.raises(ValueError, match=message):
        SoftmaxSweep(**params).fit(X, y)


def test_fit_returns_the_minimum_or_warns():
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y = blobs(num=400)
    X = X + np.random.default_rng(3).normal(scale=3.0, size=X.shape).astype(np.float32)  # overlapping classes
    clf = SoftmaxClassifier(reg=1e-2, val_size=0, tol=1e-6).fit(X, y)
    reference = linear_model.LogisticRegression(C=1 / (1e-2 * len(y)), tol=1e-10, max_iter=10_000).fit(
        (X - X.mean(axis=0)) / X.std(axis=0), y)
    standardized = (X - X.mean(axis=0)) / X.std(axis=0)
    ours = clf.decision_function(X)
    theirs = reference.decision_function(standardized)
    np.testing.assert_allclose(ours - ours.mean(axis=1, keepdims=True), theirs - theirs.mean(axis=1, keepdims=True),
                               atol=2e-3)
    assert clf.n_iter_ >= 1 and clf.history_["gradient"] <= 1e-6
    with pytest.warns(ConvergenceWarning, match="stopped after 2 iterations"):
        assert SoftmaxClassifier(reg=1e-4, max_iter=2).fit(X, y).n_iter_ == 2


def test_the_estimators_parameters_are_the_config_keys_with_their_defaults():
    """Defaults live in config.SETTINGS: the estimators' parameters repeat none of them."""
    from linclf.config import SWEEP_DEFAULTS
    from linclf.estimators import RENAMED

    settings = {**{RENAMED.get(key, key): default for key, default in DEFAULTS.items()}, "verbose": False}
    assert SoftmaxClassifier().get_params() == settings
    assert SoftmaxSweep().get_params() == {"grid": None, **SWEEP_DEFAULTS, "refit": False, **settings}


def test_a_sweep_warns_of_runs_that_did_not_converge_and_says_which():
    X, y = blobs()
    X = X + np.random.default_rng(4).normal(scale=3.0, size=X.shape).astype(np.float32)
    with pytest.warns(ConvergenceWarning, match=r"2 of 2 runs stopped before converging"):
        sweep = SoftmaxSweep(grid={"reg": [1e-5, 1e-4]}, max_iter=2).fit(X, y)
    assert list(sweep.cv_results_["converged"]) == [False, False] and list(sweep.cv_results_["n_iter"]) == [2, 2]


def test_a_sweep_on_too_few_rows_to_validate_says_so():
    X, y = blobs(num=9)
    with pytest.raises(ValueError, match=r"val_size must be at least 1 \(this data has 9 training rows: the default "
                                         r"holds out a tenth, none below 10\)"):
        SoftmaxSweep().fit(X, y)


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_float64_features_on_a_large_offset_keep_their_precision(solver, tmp_path):
    """1e6 plus class centres 1e-2 apart: float32's spacing at 1e6 is 0.06, so a cast before
    centring loses them; the rows are centred in float64 first, in training and at predict time,
    saved and loaded."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    X = 1e6 + rng.normal(size=(3, 8))[labels] * 1e-2 + rng.normal(size=(600, 8)) * 1e-4
    params = {"lr": 1e-2, "epochs": 5} if solver == "sgd" else {}
    clf = SoftmaxClassifier(val_size=100, random_state=0, **params).fit(X, labels)
    assert clf.score(X, labels) > 0.95
    assert load(clf.save(tmp_path / "run")).score(X, labels) > 0.95


def test_a_class_with_no_training_row_is_a_warning():
    rng = np.random.default_rng(0)
    y = np.sort(rng.integers(0, 3, 300))
    X = rng.normal(size=(3, 5))[y] + rng.normal(size=(300, 5)) * 0.1
    last = int((y == 2).sum())
    with pytest.warns(UserWarning, match=r"class '2' has no row in the training split \(val_split tail, "
                                         rf"{last} validation rows\).*set val_split to random"):
        SoftmaxClassifier(val_size=last).fit(X, y)
