"""Numerical gradients by centred differences, to check analytic ones (as in cs231n)."""
import numpy as np


def numerical_gradient(f, x, h=1e-5):
    """Centred-difference gradient of the scalar function f() with respect to array x.

    f takes no arguments and reads x, which is perturbed in place and restored. Returns an array
    of x's shape: (f(x + h e_i) - f(x - h e_i)) / (2h) for every index i.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        plus = f()
        x[index] = old - h
        minus = f()
        x[index] = old
        grad[index] = (plus - minus) / (2 * h)
    return grad


def relative_error(a, b):
    """||a - b|| / (||a|| + ||b||) over all entries (0 means identical, 1 unrelated)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))
