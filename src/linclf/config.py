"""Training configuration: the defaults (one line each), and validation of YAML files and flags
(config_files.py reads the files). Precedence: DEFAULTS < YAML file < command-line flags;
`resolve()` returns the merged, validated config that is saved beside every result.
"""
import difflib
import math
import numbers

from linclf.config_files import load_yaml
from linclf.util.errors import LinclfError, short_repr

# key: (default, allowed values, what it means) -- one line each. Allowed values are
# (type, lowest, highest, lowest allowed itself?, highest allowed itself?) or a tuple of words.
SETTINGS = {
    "solver": (None, ("lbfgs", "sgd"), "how W is found: lbfgs, the minimum of the objective, to tol (training/lbfgs.py); sgd, minibatch SGD on a fixed schedule of lr, lr_decay and epochs (training/loop.py). Default: lbfgs, or sgd when a setting of the schedule is given"),
    "tol": (None, (float, 0.0, 1.0, False, True), "solver lbfgs: converged when the largest entry of the objective's gradient (W and b) is at most tol"),
    "max_iter": (None, (int, 1, 100_000, True, True), "solver lbfgs: at most this many iterations (each about one pass over the training split); a run stopped by it is marked not converged"),
    "reg": (1.0e-3, (float, 0.0, 1.0e3, True, True), "L2 strength: loss += 0.5 * reg * sum(W**2); the bias is not regularized"),
    "epochs": (None, (int, 1, 10_000, True, True), "solver sgd: passes over the training split"),
    "batch_size": (None, (int, 1, 50_000, True, True), "solver sgd: examples per SGD step"),
    "lr": (None, (float, 0.0, 1.0e3, False, True), "solver sgd: learning rate (step size) of the first epoch"),
    "lr_decay": (None, (float, 0.0, 1.0, False, True), "solver sgd: lr is multiplied by this after every epoch (1 = constant)"),
    "momentum": (None, (float, 0.0, 1.0, True, False), "solver sgd: classical (heavy-ball) momentum; 0 = plain SGD"),
    "init_scale": (None, (float, 0.0, 1.0, True, True), "solver sgd: standard deviation of the random initial W (lbfgs starts from 0)"),
    "seed": (0, (int, 0, 2**32 - 1, True, True), "seeds the random validation split, the preconditioner's sketch, and sgd's initial W and shuffling: same seed, same result"),
    "val_size": (None, (int, 0, 10_000_000, True, True), "examples of the training data held out for validation (0 = none: no validation metrics, and no --best for the run). Default: a tenth of the rows, at most 1,000 (none below 10 rows)"),
    "train_size": (0, (int, 0, 10_000_000, True, True), "train on the first train_size of the rest (0 = all of them)"),
    "val_split": ("tail", ("tail", "random"), "validation rows: the last val_size, or a seeded stratified random sample"),
    "precondition": (None, (int, 0, 100_000, True, True), "solver sgd: SGD on inputs whose top `precondition` principal directions (at most D) are rescaled to unit variance (0 = off; precondition.py): fast convergence on ill-conditioned features; reg, and the reported training loss, then weigh those directions more (solver lbfgs preconditions by itself, without changing the objective)"),
    "features": ("pixels", ("pixels", "kmeans"), "the classifier's inputs: raw pixels, or learned k-means features"),
    "kmeans_k": (1600, (int, 1, 20_000, True, True), "k-means centroids; an image gets kmeans_pool^2 x kmeans_k features (doubled by kmeans_encoding soft, halved by mirror pairs)"),
    "patch_size": (6, (int, 2, 16, True, True), "k-means patches are patch_size x patch_size x 3 pixels"),
    "stride": (1, (int, 1, 16, True, True), "step in pixels between the patches an image is encoded with"),
    "kmeans_patches": (400_000, (int, 1_000, 10_000_000, True, True), "random training patches k-means learns from"),
    "kmeans_iterations": (50, (int, 0, 1_000, True, True), "k-means iterations (fewer when it converges); 0: no k-means, the centroids are random whitened training patches (kmeans_k distinct ones; with mirror pairs kmeans_k / 2 and their mirror images: a random dictionary: as good with kmeans_encoding soft, README)"),
    "kmeans_seed": (0, (int, 0, 2**32 - 1, True, True), "seeds the patch sample and the k-means start"),
    "kmeans_pool": (2, (int, 1, 6, True, True), "activations are summed over kmeans_pool x kmeans_pool regions of the image (2 = the paper's quadrants)"),
    "kmeans_encoding": ("triangle", ("triangle", "soft"), "each patch's activations: triangle, max(0, mean(d) - d_k) of its distances d_k to the centroids (kmeans_k a patch); soft, max(0, s_k - kmeans_alpha) and max(0, -s_k - kmeans_alpha) of its responses s_k to the normalized centroids (2 x kmeans_k a patch: twice the features)"),
    "kmeans_alpha": (0.25, (float, 0.0, 100.0, True, True), "the soft encoding's threshold (responses of whitened patches to unit-length centroids)"),
    "kmeans_symmetry": ("none", ("none", "mirror"), "mirror: centroids in left-right mirror pairs and each feature summed with its partner, so an image and its mirror image get the same features (flip augmentation at no cost, half the features)"),
}
DEFAULTS = {key: default for key, (default, _, _) in SETTINGS.items()}  # None: depends on the solver or the data
# The two solvers and the settings each one owns: a setting of one given with the other is refused.
SOLVER_DEFAULTS = {
    "lbfgs": {"tol": 1.0e-4, "max_iter": 1000},
    "sgd": {"epochs": 10, "batch_size": 200, "lr": 1.0e-3, "lr_decay": 0.9, "momentum": 0.9, "init_scale": 1.0e-3,
            "precondition": 0},
}
MEMBER_KEYS = ("reg", "lr", "lr_decay", "momentum", "init_scale")  # may differ between runs trained together
REG_PATH = tuple(float(f"{10.0 ** (k / 2 - 6):.3g}") for k in range(13))  # SoftmaxSweep's default grid: 1e-6 .. 1
MOST_VAL_ROWS = 1000  # the default validation split: a tenth of the rows, at most this many
METRIC_NAMES = ("val_accuracy", "train_accuracy")  # what "best" may maximize
SWEEP_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # a sweep's name: its folder under the runs dir
# A grid's own settings (grid files and SoftmaxSweep):
SWEEP_DEFAULTS = {
    "metric": "val_accuracy",  # what "best" maximizes: val_accuracy or train_accuracy
    "group_size": 32,          # at most this many configurations trained together (memory bound)
}
RULES = {key: rule for key, (_, rule, _) in SETTINGS.items()}

# The settings of the learned feature map, used when features is kmeans: config key -> its name in
# the feature step's params (pipeline.KMeansFeatures.params: the feature cache's key, the model file).
KMEANS_PARAMS = {"kmeans_k": "k", "patch_size": "patch_size", "stride": "stride", "kmeans_patches": "patches",
                 "kmeans_iterations": "iterations", "kmeans_seed": "seed", "kmeans_pool": "pool",
                 "kmeans_symmetry": "mirror", "kmeans_encoding": "encoding", "kmeans_alpha": "alpha"}
FEATURE_KEYS = tuple(KMEANS_PARAMS)
ALWAYS_IN_PARAMS = FEATURE_KEYS[:6]  # the others enter params only off their defaults (kmeans_params)
SPLIT_KEYS = ("val_size", "train_size", "val_split")  # a train/validation split: runs are compared within one
# What a prepared split's features depend on (beside the data): the feature cache's key (its
# step's params and split), the feature settings `linclf features` builds, jobs.Preparer's key.
PREPARED_KEYS = ("features", *FEATURE_KEYS, *SPLIT_KEYS)

# Keys that shape the data and the solver's passes over it; runs that share them can be trained together.
DATA_KEYS = tuple(key for key in SETTINGS if key not in MEMBER_KEYS)


def _describe_range(key):
    rule = RULES[key]
    if isinstance(rule[0], str):
        return "one of " + ", ".join(rule)
    kind, low, high, low_ok, high_ok = rule
    left, right = "[" if low_ok else "(", "]" if high_ok else ")"
    if kind is int:
        return f"an integer in {left}{low:,}, {high:,}{right}"
    return f"a number in {left}{low:g}, {high:g}{right}"


def check_key(key, valid=DEFAULTS, prefix=""):
    """Reject a key not in `valid`, suggesting the closest valid one."""
    if key in valid:
        return
    close = difflib.get_close_matches(key, list(valid), n=1) if isinstance(key, str) and len(key) <= 100 else []
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise LinclfError(f"{prefix}unknown key {short_repr(key)}{hint}; valid keys: {', '.join(valid)}")


def check_value(key, value, prefix=""):
    """Return `value` converted to the key's type, or raise naming the key, the range and the value.

    Strings such as "1e-3" (PyYAML reads them as strings) are accepted as numbers.
    """
    bad = LinclfError(f"{prefix}{key} must be {_describe_range(key)}, got {short_repr(value)}")
    if isinstance(RULES[key][0], str):
        if not isinstance(value, str) or value not in RULES[key]:
            raise bad
        return value
    kind, low, high, low_ok, high_ok = RULES[key]
    if isinstance(value, bool):  # numpy booleans are no numbers.Integral: refused below
        raise bad
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise bad from None
    if not isinstance(value, (numbers.Integral, numbers.Real)) or not math.isfinite(value):  # numpy scalars too
        raise bad
    if kind is int and value != int(value):
        raise bad
    value = kind(value)
    if value < low or value > high or (value == low and not low_ok) or (value == high and not high_ok):
        raise bad
    return value


def validate(overrides, source=""):
    """Check every key and value of `overrides`; return a new dict with converted values (None
    stays None for a key whose default is None: unset, the solver or the data decides). `source` (a
    file name, say) starts every error message."""
    prefix = f"{source}: " if source else ""
    if not isinstance(overrides, dict):
        raise LinclfError(f"{prefix}expected a mapping of key: value, got {type(overrides).__name__}")
    clean = {}
    for key, value in overrides.items():
        check_key(key, prefix=prefix)
        clean[key] = None if value is None and DEFAULTS[key] is None else check_value(key, value, prefix)
    return clean


def complete(overrides, source=""):
    """The one resolver: a full configuration (a new dict) from the settings given (`overrides`,
    None meaning not given), each checked. The solver is `solver` when given, else sgd when a
    setting only sgd has is given, else lbfgs; the other solver's settings are None, and given with
    it they are refused, as are feature settings that do not fit together (check_features). A
    completed configuration completes to itself."""
    prefix = f"{source}: " if source else ""
    given = {key: value for key, value in validate(overrides, source).items() if value is not None}
    schedule = [key for key in SOLVER_DEFAULTS["sgd"] if key in given]
    solving = [key for key in SOLVER_DEFAULTS["lbfgs"] if key in given]
    solver = given.get("solver") or ("sgd" if schedule else "lbfgs")
    if solver == "lbfgs" and schedule:
        raise LinclfError(f"{prefix}{', '.join(schedule)} {'is a setting' if len(schedule) == 1 else 'are settings'} "
                          f"of solver sgd's schedule; solver lbfgs takes its own steps to the minimum (tol, "
                          f"max_iter): drop {', '.join(schedule)} or set solver: sgd")
    if solver == "sgd" and solving:
        raise LinclfError(f"{prefix}{', '.join(solving)} {'is a setting' if len(solving) == 1 else 'are settings'} "
                          f"of solver lbfgs; solver sgd runs its schedule (epochs, lr, lr_decay)"
                          + (f", and {', '.join(schedule)} asks for it" if schedule and "solver" not in given else "")
                          + f": drop {', '.join(solving)} or "
                          + ("set solver: lbfgs" if "solver" in given else "the schedule's settings"))
    return check_features({**DEFAULTS, **SOLVER_DEFAULTS[solver], **given, "solver": solver}, prefix)


def kmeans_params(config):
    """The feature step's params for a complete configuration: the settings of ALWAYS_IN_PARAMS,
    and kmeans_pool, kmeans_symmetry and kmeans_encoding (with kmeans_alpha) only off their
    defaults, so the feature cache's keys of the settings before these existed stay the same."""
    params = {KMEANS_PARAMS[key]: config[key] for key in ALWAYS_IN_PARAMS}
    if config["kmeans_pool"] != DEFAULTS["kmeans_pool"]:
        params["pool"] = config["kmeans_pool"]
    if config["kmeans_symmetry"] == "mirror":
        params["mirror"] = True
    if config["kmeans_encoding"] != DEFAULTS["kmeans_encoding"]:
        params["encoding"], params["alpha"] = config["kmeans_encoding"], float(config["kmeans_alpha"])
    return params


def kmeans_settings(params):
    """The feature settings a feature step's params stand for (kmeans_params' inverse): a
    configuration's FEATURE_KEYS, defaults for what params leave out, unchecked."""
    settings = {key: params.get(name, DEFAULTS[key]) for key, name in KMEANS_PARAMS.items()}
    settings["kmeans_symmetry"] = "mirror" if params.get("mirror") else DEFAULTS["kmeans_symmetry"]
    return settings


def feature_map(config):
    """The encoding settings of features/kmeans.py's maths for a configuration's feature settings."""
    return {"patch_size": config["patch_size"], "stride": config["stride"], "pool": config["kmeans_pool"],
            "mirror": config["kmeans_symmetry"] == "mirror", "encoding": config["kmeans_encoding"],
            "alpha": float(config["kmeans_alpha"])}


IMAGE_SIDE = 32  # the learned feature map encodes IMAGE_SIDE x IMAGE_SIDE images (CIFAR-10's)


def patch_positions(patch_size, stride):
    """P: patch positions per image side of patch_size patches at stride (27 for 6 at 1)."""
    return (IMAGE_SIDE - patch_size) // stride + 1


def pool_bounds(P, pool):
    """Region bounds (pool + 1,) of P positions: round(i P / pool), halves rounded up (the paper's
    round(27 / 2) = 14), so pool 2 splits [0, ceil(P / 2)) and [ceil(P / 2), P)."""
    return [(2 * i * P + pool) // (2 * pool) for i in range(pool + 1)]


def check_features(config, prefix=""):
    """The rules between a complete configuration's feature settings; returns config. Refused: k-means
    settings off their defaults with features pixels (they would be ignored silently), and, before
    any work, what the feature step would refuse later: more centroids than patches, a pooling grid
    finer than the patch positions, and inexact mirror pairs (an odd kmeans_k, or patch positions
    or regions that are not mirror-symmetric)."""
    if config["features"] != "kmeans":
        stray = [key for key in FEATURE_KEYS if config[key] != DEFAULTS[key]]
        if stray:
            raise LinclfError(f"{prefix}{', '.join(stray)} apply only with features: kmeans (features is "
                              f"{config['features']})")
        return config
    patch_size, stride, pool = config["patch_size"], config["stride"], config["kmeans_pool"]
    k, patches, mirror = config["kmeans_k"], config["kmeans_patches"], config["kmeans_symmetry"] == "mirror"
    if config["kmeans_encoding"] != "soft" and config["kmeans_alpha"] != DEFAULTS["kmeans_alpha"]:
        raise LinclfError(f"{prefix}kmeans_alpha applies only with kmeans_encoding: soft (kmeans_encoding is "
                          f"{config['kmeans_encoding']})")
    if not mirror and k > patches:
        raise LinclfError(f"{prefix}kmeans_k must be at most kmeans_patches (k-means starts from kmeans_k distinct "
                          f"patches): {patches}, got {k}")
    if mirror and k // 2 > 2 * patches:
        raise LinclfError(f"{prefix}kmeans_symmetry: mirror learns kmeans_k / 2 centroids from the patches and their "
                          f"mirror images: kmeans_k must be at most 4 x kmeans_patches = {4 * patches}, got {k}")
    # stride <= 16 <= 32 - patch_size by their ranges: every patch fits the image at its stride
    P = patch_positions(patch_size, stride)
    where = f"patch_size {patch_size} at stride {stride}: {P} patch positions per side"
    if pool > P:
        raise LinclfError(f"{prefix}kmeans_pool must be at most the patch positions per side ({where}), got {pool}")
    if not mirror:
        return config
    if k % 2:
        raise LinclfError(f"{prefix}kmeans_symmetry: mirror needs an even kmeans_k (centroids come in mirror "
                          f"pairs), got {k}")
    if (IMAGE_SIDE - patch_size) % stride:
        raise LinclfError(f"{prefix}kmeans_symmetry: mirror needs patch positions that mirror onto each other: "
                          f"stride must divide 32 - patch_size = {IMAGE_SIDE - patch_size}, got stride {stride}")

    def symmetric(g):
        bounds = pool_bounds(P, g)
        return all(bounds[i] + bounds[g - i] == P for i in range(g + 1))

    if not symmetric(pool):
        allowed = ", ".join(str(g) for g in range(1, min(P, RULES['kmeans_pool'][2]) + 1) if symmetric(g))
        raise LinclfError(f"{prefix}kmeans_symmetry: mirror needs mirror-symmetric regions ({where}): "
                          f"kmeans_pool must be one of {allowed}, got {pool}")
    return config


def val_rows(val_size, num_train):
    """The validation rows val_size stands for with num_train training rows: itself when given,
    else (None) a tenth of the rows (none below 10 rows), at most MOST_VAL_ROWS."""
    return min(MOST_VAL_ROWS, num_train // 10) if val_size is None else val_size


def for_data(config, num_train):
    """config with its data-dependent defaults filled in for num_train training rows (val_size)."""
    return {**config, "val_size": val_rows(config["val_size"], num_train)}


def resolve(yaml_path=None, flags=None):
    """DEFAULTS, overridden by the YAML file, overridden by flags (None values are ignored), each
    key and value validated, completed by `complete`."""
    given = {}
    if yaml_path is not None:
        raw = load_yaml(yaml_path)
        if "grid" in raw:
            raise LinclfError(f"{yaml_path} is a grid file (it has grid:), not one configuration: train its grid "
                              f"with 'linclf sweep {yaml_path}'")
        given.update(validate(raw, source=str(yaml_path)))
    given.update(validate({k: v for k, v in (flags or {}).items() if v is not None}, source="command line"))
    return complete(given, str(yaml_path) if yaml_path is not None else "command line")
