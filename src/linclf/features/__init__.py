"""Input steps: the pipeline (standardization, learned k-means features), preconditioning, the feature cache."""
