"""linclf: fast, honest linear (softmax) classifiers on CIFAR-10."""

__version__ = "0.1.0"
