"""Evaluation of a trained model on one split: accuracy, cross-entropy, per-class accuracy, confusion."""
import numpy as np

from linclf import data, model, preprocess

SPLITS = ("test", "val", "train")


def evaluate(trained, images, labels, class_names):
    """Report for images (N, 32, 32, 3) uint8 and labels (N,): a JSON-ready dict."""
    labels = np.asarray(labels, dtype=np.intp)
    num_classes = len(class_names)
    probs = np.empty((len(labels), num_classes), dtype=np.float32)
    predicted = np.empty(len(labels), dtype=np.intp)
    for start in range(0, len(labels), 5000):  # bounded float temporaries
        X = preprocess.to_inputs(images[start:start + 5000], trained.preprocessing)
        probs[start:start + 5000] = model.predict_proba(trained.W, trained.b, X)
        predicted[start:start + 5000] = probs[start:start + 5000].argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {"num_examples": int(len(labels)),
            "accuracy": float(np.mean(predicted == labels)) if len(labels) else 0.0,
            "cross_entropy": model.cross_entropy(probs.astype(np.float64), labels),
            "per_class_accuracy": {name: round(float(a), 4) for name, a in zip(class_names, per_class)},
            "confusion": confusion.tolist(),
            "class_names": list(class_names)}


def evaluate_split(trained, data_dir, split_name):
    """Evaluate on "test", "val" or "train", with the split sizes the model was trained with."""
    dataset = data.load_cache(data_dir)
    images, labels = data.split(dataset, split_name, trained.config["val_size"], trained.config["train_size"])
    report = evaluate(trained, images, labels, dataset.class_names)
    report["split"] = split_name
    return report


def format_report(report):
    """A readable table of the report."""
    names = report["class_names"]
    lines = [f"split {report['split']}: {report['num_examples']} images",
             f"accuracy       {report['accuracy']:.4f}",
             f"cross-entropy  {report['cross_entropy']:.4f} nats",
             "",
             "per-class accuracy and confusion (rows true, columns predicted):",
             " " * 12 + "  acc " + "".join(f"{name[:6]:>7}" for name in names)]
    for name, row in zip(names, report["confusion"]):
        lines.append(f"{name:>12} {report['per_class_accuracy'][name]:.3f}" + "".join(f"{v:>7}" for v in row))
    return "\n".join(lines)
