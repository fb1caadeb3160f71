"""Engine: the training loop, strategies (single, DDP, DeepSpeed), precision, checkpoints, logging."""
