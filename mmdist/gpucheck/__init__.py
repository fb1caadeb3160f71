"""GPU acceptance in one command: ``python -m mmdist.gpucheck --out DIR`` (``make gpu-check``).

Runs every check that needs a GPU, each in a child process of its own with a timeout
(mmdist.gpucheck.runner), in the order of mmdist.gpucheck.registry (the most telling first; six
minutes at most on one GPU), and writes DIR/gpucheck.json and DIR/gpucheck.md after every row.
A row passes only when each of its assertions was made and held; a row none of whose assertions
could be made reads "not run" with the reason (no CUDA, a library not installed, "needs 2 GPUs",
every test skipped); a crash, hang or kill is one FAILED row and the next check still runs. Exit
status: 0 every row that ran passed, 1 a row FAILED, 3 nothing was verified (no row ran).
``--device cpu`` runs the checks that have a small CPU form, to try the machinery without a GPU.
The checks' state lives in DIR/work, emptied on every run.
"""
