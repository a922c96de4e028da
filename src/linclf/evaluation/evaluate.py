"""Evaluation of a trained model on one split: accuracy, cross-entropy, per-class accuracy, confusion.
Raw inputs go through the pipeline stored with the model (modelfile.Model.pipeline), the same code the
trainer fitted: there is no second copy of the preprocessing."""
import numpy as np

from linclf.training import softmax
from linclf.data import sources
from linclf.util.chunks import chunk_rows
from linclf.util.errors import LinclfError

CHUNK = 5000  # examples predicted at a time (predict_rows); `scores` chunks by bytes


def scores(trained, X):
    """Scores (N, C) float32 of raw inputs X (N, ...) through the model's pipeline, in chunks whose
    (rows, D) float32 inputs take at most util.chunks.CHUNK_BYTES."""
    trained.pipeline.check_inputs(X)
    out = np.empty((len(X), len(trained.b)), dtype=np.float32)
    rows = chunk_rows(max(trained.W.shape[0], int(np.prod(X.shape[1:]))), 4)
    with np.errstate(all="ignore"):  # overflow is reported below, in one line
        for start in range(0, len(X), rows):
            out[start:start + rows] = trained.pipeline.transform(X[start:start + rows]) @ trained.W + trained.b
    if not np.isfinite(out).all():
        raise LinclfError(f"{trained.path}: the model's scores are not finite (its weights are too large for "
                          f"these inputs); train it again")
    return out


def probabilities(trained, X):
    """Class probabilities (N, C) float64 of raw inputs X (N, ...): the softmax of `scores`."""
    return np.exp(softmax.log_softmax(scores(trained, X).astype(np.float64)))


def describe_inputs(pipeline):
    """What a model takes, in words: "32x32x3 images" or "features (D=512)"."""
    if pipeline.input_kind == "features":
        return f"features (D={pipeline.input_shape[0]})"
    return f"{'x'.join(map(str, pipeline.input_shape))} {pipeline.input_kind}"


def check_fits(trained, source):
    """Refuse a source whose inputs or classes do not match the model: one line naming the data."""
    pipe, where = trained.pipeline, source.where
    if pipe.input_kind != source.kind or tuple(source.test_x.shape[1:]) != pipe.input_shape:
        held = (f"features (D={source.test_x.shape[1]})" if source.kind == "features"
                else f"{'x'.join(map(str, source.test_x.shape[1:]))} images")
        hint = "; give the model's data with --data FILE" if pipe.input_kind == "features" else ""
        raise LinclfError(f"{where} holds {held} but the model takes {describe_inputs(pipe)}{hint}")
    if source.num_classes != len(trained.class_names):
        raise LinclfError(f"{where}: the data has {source.num_classes} classes but the model has "
                          f"{len(trained.class_names)}")
    numbered = list(trained.class_names) == [str(c) for c in range(len(trained.class_names))]  # no names given
    if source.named and not numbered and list(source.class_names) != list(trained.class_names):
        raise LinclfError(f"{where}: class_names ({', '.join(source.class_names)}) differ from the model's "
                          f"({', '.join(trained.class_names)})")


def evaluate(trained, X, labels, class_names):
    """Report for raw inputs X (N, ...) and labels (N,): a JSON-ready dict."""
    labels = np.asarray(labels)  # (N,) in 0..C-1: checked where they entered (the data source)
    num_classes = len(class_names)
    S = scores(trained, X)
    predicted = S.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    loss, correct = softmax.loss_sums(S, labels)  # the kernel validation uses during training
    return {"num_examples": int(len(labels)),
            "accuracy": float(correct / len(labels)) if len(labels) else 0.0,
            "cross_entropy": float(loss / len(labels)) if len(labels) else 0.0,
            "per_class_accuracy": {name: round(float(a), 4) for name, a in zip(class_names, per_class)},
            "confusion": confusion.tolist(),
            "class_names": list(class_names)}


def evaluate_split(trained, source, split_name):
    """Evaluate on "test", "val" or "train" of a sources.Source, with the split the model was
    trained with."""
    check_fits(trained, source)
    if split_name == "val" and trained.config.get("val_size") == 0:
        raise LinclfError(f"{trained.path}: this model was trained with val_size 0: it has no validation rows; "
                          f"evaluate --split test or train")
    X, labels = sources.split(source, split_name, {"val_split": "tail", **trained.config})
    report = evaluate(trained, X, labels, trained.class_names)
    sources.check_unchanged(source)
    report["split"] = split_name
    report["data_id"] = source.data_id
    if trained.data_id not in ("unknown", source.data_id):
        report["note"] = (f"the model was trained from arrays in Python ({trained.data_id}); linclf cannot tell "
                          f"whether they were this data" if trained.data_id.startswith("python-")
                          else f"the model was trained on other data ({trained.data_id})")
    return report


def format_report(report):
    """A readable table of the report."""
    names = report["class_names"]
    lines = [f"split {report['split']}: {report['num_examples']} examples",
             f"accuracy       {report['accuracy']:.4f}",
             f"cross-entropy  {report['cross_entropy']:.4f} nats",
             "",
             "per-class accuracy and confusion (rows true, columns predicted):",
             " " * 12 + "  acc " + "".join(f"{name[:6]:>7}" for name in names)]
    for name, row in zip(names, report["confusion"]):
        lines.append(f"{name[:12]:>12} {report['per_class_accuracy'][name]:.3f}" + "".join(f"{v:>7}" for v in row))
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    return "\n".join(lines)
