"""Training: the loop, checkpoints, temperature scaling, the inputs fingerprint."""
