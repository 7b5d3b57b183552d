"""Layers, losses, initializers, optimizers and training."""
