"""Where data comes from: the CIFAR-10 cache and its download, and arrays a user brings (sources)."""
