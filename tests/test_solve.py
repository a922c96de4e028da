"""Solver lbfgs for a group: every run solved to its own minimum, recorded as a RunResult."""
import numpy as np
import pytest

from linclf import config
from linclf.features import precondition
from linclf.training import lbfgs, solve
from linclf.training.loop import Prepared
from test_lbfgs import problem


def prepared(num=400, dim=10, classes=4):
    X, y = problem(num=num, dim=dim, classes=classes, scale=2.0)
    return Prepared(X[:300], y[:300], X[300:], y[300:], np.zeros(dim, np.float32), 1.0, classes)


def test_a_group_reaches_each_runs_own_minimum():
    data = prepared()
    regs = [float(r) for r in np.geomspace(1e-5, 1.0, 9)]
    configs = [config.complete({"reg": reg, "tol": 1e-5}) for reg in regs]
    results = solve.solve_group(data, configs)
    for result, reg in zip(results, regs):
        alone = lbfgs.solve(data.X_train, data.y_train, [reg], 4, 1e-5, 1000)[0]
        assert result.converged and result.n_iter == alone.n_iter and result.config["reg"] == reg
        assert result.history["train_loss"][0] == pytest.approx(alone.objective, rel=1e-6)
    accuracies = [r.metrics()["val_accuracy"] for r in results]
    assert all(0 <= a <= 1 for a in accuracies) and len(set(accuracies)) > 1


@pytest.mark.parametrize("settings, dtype", [({}, np.float32), ({"solver": "sgd", "precondition": 2}, np.float16)])
def test_lbfgs_holds_float16_rows_as_float32_and_sgd_keeps_them(tmp_path, settings, dtype):
    """lbfgs passes over its rows dozens of times: converting float16 at each pass cost 2-3x."""
    from linclf.data import sources
    from linclf.experiments import jobs

    X, y = problem(num=200, dim=6, classes=3)
    np.savez(tmp_path / "emb.npz", X_train=X.astype(np.float16), y_train=y, X_test=X[:5].astype(np.float16), y_test=y[:5])
    source = sources.open_source({"arrays": str(tmp_path / "emb.npz")})
    cfg = config.for_data(config.complete({"val_split": "random", **settings}), len(y))
    prepared, _, preconditioner = jobs.prepare(source, cfg)
    assert prepared.X_train.dtype == dtype and len(preconditioner) == 3


def test_the_progress_bar_counts_finished_runs_to_the_last():
    made = []

    class Bar:
        def __init__(self, total, unit):
            self.total, self.unit, self.n = total, unit, 0
            made.append(self)

        def update(self, n):
            self.n += n

        def set_postfix(self, **values):
            pass

        def close(self):
            pass

    configs = [config.complete({"reg": reg}) for reg in (1e-3, 1e-2, 1e-1, 1.0, 10.0)]
    solve.solve_group(prepared(), configs, progress=Bar)
    assert [(bar.total, bar.unit, bar.n) for bar in made] == [(5, "run", 5)]
