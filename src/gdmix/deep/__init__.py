"""Deep (PyTorch) and gradient-boosted fixed effects."""
