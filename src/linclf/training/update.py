"""The update rule: momentum SGD with L2 weight decay and a per-epoch lr decay, for a group of
configurations at once. An optimizer or lr schedule of another kind would go here.

Per member, with dW and db the gradients of `softmax.softmax_loss` (data term; the L2 term is added
here as reg * W):

    v_W = momentum * v_W - lr * (dW + reg * W);   W += v_W
    v_b = momentum * v_b - lr * db;               b += v_b
    lr  = lr * lr_decay after every epoch
"""
import numpy as np

PARAMETERS = ("lr", "reg", "momentum", "lr_decay")  # the per-member hyper-parameters of the rule


class GroupState:
    """The stacked parameters of the members still training, and their hyper-parameters.

    Weights are stored transposed, Wt (K*C, D): member k owns rows k*C .. k*C+C-1, so per-member
    factors (lr, reg, momentum) broadcast along contiguous rows of length D. `members` lists the
    configuration index of each member still training.
    """

    def __init__(self, configs, init, num_classes):
        self.members = list(range(len(configs)))
        self.num_classes = num_classes
        for key in PARAMETERS:  # one value per row of Wt
            setattr(self, key, np.repeat(np.array([c[key] for c in configs], dtype=np.float32), num_classes))
        # C order matters: the update mixes Wt with the gradient, and mixed layouts run 5x slower
        self.Wt = np.ascontiguousarray(np.concatenate([np.float32(c["init_scale"]) * init.T for c in configs]))
        self.b = np.zeros(len(self.Wt), dtype=np.float32)
        self.velocity_W = np.zeros_like(self.Wt)
        self.velocity_b = np.zeros_like(self.b)
        self.gradient = np.empty_like(self.Wt)  # lr * dW of the data term, filled by kernels.softmax_gradient
        self.refresh()

    def refresh(self):
        """Recompute the update's factors after lr or the members change. A factor shared by every
        row is kept as a scalar: numpy multiplies by one about three times faster than by a vector."""
        def uniform(values):
            return values.size > 0 and bool(np.all(values == values[0]))

        def per_member(values):  # multiplies the (K, C, D) view of Wt: twice as fast as a (K*C, 1) column
            return values[0] if uniform(values) else values[::self.num_classes].reshape(-1, 1, 1)

        self.lr_columns = self.lr[0] if uniform(self.lr) else self.lr  # multiplies scores (n, K*C)
        self.momentum_factor = per_member(self.momentum)
        self.decay_factor = per_member(self.lr * self.reg)

    def apply(self, bias_step):
        """One update of every member from self.gradient (lr * dW, transposed) and bias_step (K*C,)
        = lr * db."""
        K, C = len(self.members), self.num_classes
        velocity, weights, gradient = (a.reshape(K, C, -1) for a in (self.velocity_W, self.Wt, self.gradient))
        velocity *= self.momentum_factor
        velocity -= gradient
        np.multiply(weights, self.decay_factor, out=gradient)
        velocity -= gradient                           # - lr * reg * W
        weights += velocity
        self.velocity_b *= self.momentum
        self.velocity_b -= bias_step
        self.b += self.velocity_b

    def end_epoch(self):
        """The lr schedule: lr *= lr_decay after every epoch."""
        self.lr *= self.lr_decay
        self.refresh()

    def penalty(self):
        """Each member's L2 term 0.5 * reg * sum(W**2) (K,)."""
        K = len(self.members)
        return 0.5 * (np.einsum("kd,kd->k", self.Wt, self.Wt) * self.reg).reshape(K, -1).sum(axis=1)

    def weights(self, position):
        """W (D, C) and b (C,) of the member at this position, as new arrays."""
        rows = slice(position * self.num_classes, (position + 1) * self.num_classes)
        return np.ascontiguousarray(self.Wt[rows].T), self.b[rows].copy()

    def drop(self, positions):
        """Remove the members at these positions (indices into self.members)."""
        C = self.num_classes
        keep = [p for p in range(len(self.members)) if p not in positions]
        rows = np.concatenate([np.arange(p * C, (p + 1) * C) for p in keep]) if keep else np.arange(0)
        for name in (*PARAMETERS, "b", "velocity_b", "Wt", "velocity_W"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name)[rows]))
        self.gradient = np.empty_like(self.Wt)
        self.members = [self.members[p] for p in keep]
        self.refresh()
