"""The ``mmdist`` command: one entry for every tool, ``mmdist COMMAND [ARGS...]``.

Each command is the same program as ``python -m mmdist.<module>`` (which keeps working); its
module is imported only when the command is run, so ``mmdist --help`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("mmdist.train", "train one run from a YAML config (single process, torchrun, mpirun, srun)"),
    "evaluate": ("mmdist.evaluate", "test a trained run in and across domains: metrics.json, tables, plots"),
    "predict": ("mmdist.predict", "class, lung mask and saliency for single PNG/JPEG/DICOM files"),
    "prepare": ("mmdist.prepare", "decode a dataset once into the shared cache that training reads"),
    "sweep": ("mmdist.sweep", "run a grid of trainings as one SLURM job array and tabulate it"),
    "launch": ("mmdist.launch.__main__", "submit one training run to SLURM (or run it locally)"),
    "bench": ("mmdist.bench.__main__", "measure the data path, augmentation, steps, DDP and fidelity"),
    "export": ("mmdist.export.__main__", "write a trained network as TorchScript or ONNX"),
    "gpucheck": ("mmdist.gpucheck.__main__", "GPU acceptance run of the project on this machine"),
    "tables": ("mmdist.evaluation.tables", "the sweep table (mean ± std, t-tests) over evaluated runs"),
}
"""command -> (module with main(argv), one line for --help)."""


def command_list() -> str:
    width = max(map(len, COMMANDS))
    return "\n".join(f"  {name:<{width}}  {line}" for name, (_, line) in COMMANDS.items())


def main(argv: list[str] | None = None) -> int:
    """Run ``mmdist COMMAND ARGS...``; returns the command's exit status (2 for an unknown one)."""
    parser = argparse.ArgumentParser(
        prog="mmdist", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MultiMix toolkit. `mmdist COMMAND --help` describes a command.",
        epilog="commands:\n" + command_list())
    parser.add_argument("command", metavar="COMMAND", choices=sorted(COMMANDS),
                        help="one of the commands below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    args = parser.parse_args(argv)
    from mmdist.runtime_check import build_mismatches

    for line in build_mismatches():  # before any device is chosen: see mmdist.runtime_check
        print(f"mmdist: {line}", file=sys.stderr)
    module = importlib.import_module(COMMANDS[args.command][0])
    status = module.main(args.args)
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
