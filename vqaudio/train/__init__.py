"""Training: Lightning modules, data loading for training, trainer construction."""
