"""GPU acceptance in one command: ``python -m mmdist.gpucheck --out DIR`` (``make gpu-check``).

Runs every check that needs a GPU and writes a table (DIR/gpucheck.md, also printed) and one JSON
(DIR/gpucheck.json); the exit status is non-zero when any check failed. It runs where the
project is not installed (``PYTHONPATH=. python -m mmdist.gpucheck``) and on torch >= 2.11. A part
whose library is missing (DeepSpeed, DALI, submitit, pytest, ...) is reported "not installed",
never "passed". ``--device cpu`` runs the same checks small on the CPU, to try the script before
a GPU is at hand.

The checks (each also a ``gpu``-marked test, tests/test_gpucheck.py):
- environment: torch, CUDA, the device and its bf16 support;
- steps: a few training steps per precision (fp32, bf16, fp16) x saliency (none, detached,
  differentiable): finite losses, fp16 skipped steps, saliency cosine against fp32, peak memory;
- ddp: a one-rank NCCL DDP run of ``python -m mmdist.train`` and its resume (parameter difference
  against the uninterrupted run);
- deepspeed: ZeRO-0 and ZeRO-2 in bf16 and fp16, when deepspeed imports;
- evaluate / predict: ``python -m mmdist.evaluate`` and ``python -m mmdist.predict`` on the device;
- gpu tests: ``pytest -m gpu``;
- bench: ``bench step --compare`` at 256 px in fp32 and bf16 (img/s and peak memory per mode).
"""
