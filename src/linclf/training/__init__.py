"""The softmax classifier's maths and its SGD trainer: reference loss, fused kernels, update rule, loop, loader."""
