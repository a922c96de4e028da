"""Using a trained model: evaluation on a split, predictions for images and rows, plots."""
