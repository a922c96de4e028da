"""linclf: fast, honest linear (softmax) classifiers on CIFAR-10, from Python or the shell.

    from linclf import SoftmaxClassifier, SoftmaxSweep, KMeansFeatures, load_cifar10, load, plot_model

The estimators follow scikit-learn's conventions (pip install 'linclf[sklearn]'); load_cifar10 and
the command line need only numpy. Names are imported when first used, so `import linclf` and the
CLI stay fast.
"""

__version__ = "0.4.0"

_PUBLIC = {"SoftmaxClassifier": "linclf.estimators", "SoftmaxSweep": "linclf.estimators",
           "KMeansFeatures": "linclf.estimators", "load": "linclf.estimators", "plot_model": "linclf.estimators",
           "load_cifar10": "linclf.data.cifar10", "LinclfError": "linclf.util.errors"}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'linclf' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
