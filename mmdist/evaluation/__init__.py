"""Evaluation: the paper's metrics, per-run evaluation, sweep tables, plots and single-image prediction."""
