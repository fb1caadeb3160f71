"""Benchmarks: ``python -m mmdist.bench {step,augment,prepare,ddp} ...``; each prints one JSON line."""
