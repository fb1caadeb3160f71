"""Packing K runs per GPU without a cluster: the CPU split rule, the spec's checks, the price
--dry-run gives K, the one-line answer when no SLURM controller is reachable, and a --local
packed sweep that names its runs (a failing run beside a finishing one)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from slurm_cluster import REPO
from test_sweep import run_sweep, write_spec

from mmdist.config import ConfigError
from mmdist.launch.__main__ import main as launch_main
from mmdist.launch.pack import cpu_share
from mmdist.launch.sweep_spec import load_spec

TINY_SPEC = REPO / "configs" / "sweeps" / "tiny.yaml"


def tree(threads=0, workers=0, backend="torch", augment_threads=2) -> dict:
    return {"trainer": {"threads": threads},
            "data": {"workers": workers, "augment": {"backend": backend,
                                                      "threads": augment_threads}}}


def test_each_packed_run_gets_its_own_cpus_and_threads_net_of_its_batch_processes():
    cpus = list(range(8))
    shares = [cpu_share(cpus, 2, i, tree(workers=1)) for i in range(2)]
    assert [s.cpus for s in shares] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert [s.threads for s in shares] == [3, 3]  # 4 CPUs, one kept busy by the batch worker
    assert cpu_share(cpus, 4, 3, tree(workers=0)).cpus == (6, 7)
    assert cpu_share(cpus, 2, 0, tree(backend="dali", augment_threads=3)).threads == 1
    assert cpu_share(cpus, 2, 0, tree(threads=5, workers=2)).threads == 5  # as configured
    # Fewer CPUs than runs: each still gets one (shared), and one thread.
    assert [cpu_share([0, 1], 4, i, tree()).cpus for i in range(4)] == [(0,), (1,), (0,), (1,)]
    assert cpu_share([0, 1], 4, 0, tree(workers=3)).threads == 1


@pytest.mark.parametrize("slurm, message", [
    ("{runs_per_gpu: 0}", "runs_per_gpu: must be >= 1"),
    ("{runs_per_gpu: 2, gpus_per_node: 2}", "runs_per_gpu: 2 packs single-GPU runs"),
    ("{runs_per_gpu: 2, nodes: 2}", "needs nodes: 1"),
    ("{runs_per_gpu: 2, gpu_memory_fraction: 1.5}", "gpu_memory_fraction: must be in (0, 1]"),
])
def test_packing_options_that_cannot_work_are_refused_naming_the_key(tmp_path, slurm, message):
    path = write_spec(tmp_path, f"grid: {{seed: [0, 1]}}\nslurm: {slurm}\n")
    with pytest.raises(ConfigError) as error:
        load_spec(path, tmp_path / "out")
    assert str(path) in str(error.value) and message in str(error.value)


def test_packed_runs_keep_the_rest_of_the_gpu_for_contexts_and_dali(tmp_path):
    spec = load_spec(write_spec(tmp_path, "grid: {seed: [0]}\nslurm: {runs_per_gpu: 4}\n"))
    assert spec.slurm.memory_fraction_per_run == pytest.approx(0.9 / 4)


def pack_result(tmp_path: Path, seconds: dict[int, float]) -> Path:
    path = tmp_path / "pack.json"
    path.write_text(json.dumps({"benchmark": "pack", "device": "cuda", "size": 256,
                                "precision": "bf16", "by_runs": [
                                    {"runs": k, "step_s_median": s} for k, s in seconds.items()]}))
    return path


def test_dry_run_prices_the_spec_k_from_s_k_or_a_bench_pack_file(tmp_path, capsys):
    # 5 runs at K = 2: 3 jobs (2 + 2 + 1); each job holds its GPU for its longest run.
    spec_text = """grid:
  seed: [0, 1, 2, 3, 4]
overrides: {trainer.max_steps: 1000}
slurm: {gpus_per_node: 1, runs_per_gpu: 2, array_parallelism: 3}
estimate: {seconds_per_step: 0.2, seconds_per_step_packed: 0.3}
"""
    path = write_spec(tmp_path, spec_text)
    code, out, err = run_sweep(capsys, str(path), "--dry-run", "--output-dir", str(tmp_path / "s"))
    assert code == 0, err
    assert "jobs:        3 array tasks of up to 2 runs each, 1 GPU each, at most 3 at once" in out
    packed = 3 * 1000 * 0.3 / 3600
    alone = 5 * 1000 * 0.2 / 3600
    assert f"estimate:    {packed:.1f} GPU-hours for 5 runs (S_K = 0.3 s/step per run with 2 " \
           "sharing a GPU" in out
    assert f"one run per GPU instead (S = 0.2 s/step): {alone:.1f} GPU-hours; packing 2 saves " \
           f"{1 - packed / alone:.0%}" in out

    # S_K from a bench pack result at the spec's K wins over the spec's own figure.
    result = pack_result(tmp_path, {1: 0.2, 2: 0.25, 4: 0.5})
    code, out, err = run_sweep(capsys, str(path), "--dry-run", "--output-dir", str(tmp_path / "s"),
                               "--pack-result", str(result))
    assert code == 0, err
    assert f"estimate:    {3 * 1000 * 0.25 / 3600:.1f} GPU-hours for 5 runs (S_K = 0.25" in out
    assert f"from {result} (device=cuda, size=256, precision=bf16)" in out
    # A result without the spec's K: one line naming the file and what it has.
    result = pack_result(tmp_path, {1: 0.2, 4: 0.5})
    code, out, err = run_sweep(capsys, str(path), "--dry-run", "--output-dir", str(tmp_path / "s"),
                               "--pack-result", str(result))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(result) in err and "measured runs [1, 4], not the spec's slurm.runs_per_gpu 2" in err

    # A result file prices a spec; it means nothing to a submission.
    with pytest.raises(SystemExit):
        run_sweep(capsys, str(path), "--output-dir", str(tmp_path / "s"), "--pack-result",
                  str(result))
    assert "--pack-result prices a spec: use it with --dry-run" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()

    # Without S_K the packed price is not guessed; the unpacked one is still shown.
    path.write_text(path.read_text().replace(", seconds_per_step_packed: 0.3", ""))
    code, out, err = run_sweep(capsys, str(path), "--dry-run", "--output-dir", str(tmp_path / "s"))
    assert code == 0, err
    assert "estimate:    none for runs_per_gpu 2; add `estimate: {seconds_per_step_packed: S_K}`" \
           in out and "python -m mmdist.bench pack --runs 1 2" in out
    assert f"one run per GPU instead (S = 0.2 s/step): {alone:.1f} GPU-hours" in out
    assert "GPU-hours for 5 runs" not in out


def unreachable(monkeypatch, tmp_path, how: str) -> None:
    if how == "no sbatch":
        empty = tmp_path / "bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
    else:
        monkeypatch.setenv("SLURM_CONF", str(tmp_path / "absent" / "slurm.conf"))


@pytest.mark.parametrize("how", ["no sbatch", "no slurm.conf"])
def test_without_a_slurm_controller_sweep_and_launch_say_so_in_one_line(tmp_path, capsys,
                                                                         monkeypatch, how):
    if how == "no slurm.conf" and not any(Path(d, "sbatch").exists()
                                          for d in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("sbatch is not installed: the 'no sbatch' case covers this machine")
    unreachable(monkeypatch, tmp_path, how)
    code, out, err = run_sweep(capsys, str(TINY_SPEC), "--output-dir", str(tmp_path / "s"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "sweep: no SLURM controller reachable" in err
    assert f"python -m mmdist.sweep {TINY_SPEC} --local" in err
    assert not (tmp_path / "s").exists()  # nothing written, nothing recorded as submitted

    capsys.readouterr()
    config = str(REPO / "configs" / "tiny.yaml")
    code = launch_main(["--config", config, f"output_dir={tmp_path / 'run'}"])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "launch: no SLURM controller reachable" in err
    assert f"python -m mmdist.launch --local --config {config}" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_local_packed_sweep_names_its_runs_and_a_failure_spares_the_neighbour(tmp_path, capsys):
    spec_path = write_spec(tmp_path, """grid:
  model.variant: [umtl]
  seed: [0, 1]
overrides:
  trainer.max_steps: 2
  trainer.threads: 1
  trainer.image_log_every: 0
  engine.device: cpu
slurm: {runs_per_gpu: 2, array_parallelism: 1}
""")
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    # umtl_seed0 cannot make its run folder: a file of that name is in the way.
    (sweep_dir / "umtl_seed0").write_text("in the way")
    code, out, err = run_sweep(capsys, str(spec_path), "--local", "--output-dir", str(sweep_dir))
    assert code == 1, out + err
    assert "submitting 2, 2 per GPU" in out
    lines = out.splitlines()
    assert "umtl_seed0: failed" in lines and "umtl_seed1: completed" in lines
    state = json.loads((sweep_dir / "sweep.json").read_text())
    pid = state["runs"]["umtl_seed0"]["job_id"]
    assert pid == state["runs"]["umtl_seed1"]["job_id"]  # one job, both runs
    assert pid not in out  # runs are named, not the local job's process id
    summary = json.loads((sweep_dir / "umtl_seed1" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2
    log = (sweep_dir / "submitit" / "packed" / "umtl_seed0.log").read_text()
    assert "Traceback" in log

    # Cleared, the failed run alone goes out again; the finished one is not trained again.
    (sweep_dir / "umtl_seed0").unlink()
    before = (sweep_dir / "umtl_seed1" / "summary.json").stat().st_mtime_ns
    code, out, err = run_sweep(capsys, str(spec_path), "--local", "--output-dir", str(sweep_dir))
    assert code == 0, out + err
    assert "{'completed': 1, 'failed': 1}; submitting 1" in out
    assert "umtl_seed0: completed" in out.splitlines() and "umtl_seed1" not in out
    assert (sweep_dir / "umtl_seed1" / "summary.json").stat().st_mtime_ns == before
