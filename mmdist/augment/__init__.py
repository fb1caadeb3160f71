"""Augmentation: the policy (declared once) and its backends (torch, DALI)."""
