"""``python -m mmdist.train`` as a user runs it: preemption signals without SLURM, and input
errors that print one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mmdist.engine import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
QUIET = ["trainer.image_log_every=0", "trainer.val_every=0", "trainer.log_every=1"]


def clean_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    # Raw datasets are prepared under ~/.cache/mmdist on first use: keep that in the test.
    return {**env, "HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}


def train(tmp_path: Path, *overrides: str, extra_env: dict | None = None, **kwargs):
    command = [sys.executable, "-m", "mmdist.train", "--config", str(TINY), *overrides]
    return subprocess.run(command, cwd=REPO, env={**clean_env(tmp_path), **(extra_env or {})},
                          capture_output=True, text=True, timeout=600, **kwargs)


def logged_steps(run_dir: Path) -> list[int]:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return [e.step for e in events.Scalars("train/total")]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=["TERM", "USR2"])
def test_a_stop_signal_checkpoints_exits_3_and_the_resume_completes(tmp_path, sig):
    run, total = tmp_path / "run", 150
    args = [sys.executable, "-m", "mmdist.train", "--config", str(TINY), f"output_dir={run}",
            f"trainer.max_steps={total}", "trainer.checkpoint_every=0", *QUIET]
    process = subprocess.Popen(args, cwd=REPO, env=clean_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        first = process.stdout.readline()
        assert first.startswith("mmdist: multimix on 1 rank(s)"), first
        deadline = time.monotonic() + 120
        while not (run / "tb").is_dir() or not list((run / "tb").iterdir()):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        time.sleep(2.0)  # some steps in
        process.send_signal(sig)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    output = process.stdout.read()
    assert code == 3, output[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    stopped = summary["steps"]
    assert summary["status"] == "preempted" and 0 < stopped < total, summary
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [stopped]  # the stop wrote it
    resumed = train(tmp_path, f"output_dir={run}", f"trainer.max_steps={total}",
                    "trainer.checkpoint_every=0", "trainer.resume=true", *QUIET)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["start_step"], summary["steps"]) == (
        "completed", stopped, total)
    assert logged_steps(run) == list(range(1, total + 1))  # every step logged, once


def raw_events(run_dir: Path) -> list[list[tuple[str, int]]]:
    """Per event file (oldest first), what is on disk in write order: ('train/total', step) for
    each logged loss and ('START', step) for a session start, the mark TensorBoard purges by."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    files = []
    for path in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        found = []
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                found.append(("START", event.step))
            found += [(v.tag, event.step) for v in event.summary.value if v.tag == "train/total"]
        files.append(found)
    return files


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_run_resumes_and_tensorboard_purges_the_steps_it_replays(tmp_path):
    """A run killed outright (no checkpoint at the kill) logged steps past its newest
    checkpoint; the resumed run replays them and marks its event file so TensorBoard drops the
    dead run's copies: each step is shown once, with the resumed run's value."""
    run, total, every = tmp_path / "run", 200, 30
    args = [sys.executable, "-m", "mmdist.train", "--config", str(TINY), f"output_dir={run}",
            f"trainer.max_steps={total}", f"trainer.checkpoint_every={every}", *QUIET]
    process = subprocess.Popen(args, cwd=REPO, env=clean_env(tmp_path), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:  # until the disk holds a logged step past a checkpoint
            assert time.monotonic() < deadline and process.poll() is None
            saved = [s for s, _ in ckpt.list_checkpoints(run)]
            if saved and (run / "tb").is_dir():
                logged = [step for _, step in sum(raw_events(run), [])]
                if logged and max(logged) > saved[-1] + 2:
                    break
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    (dead,) = raw_events(run)
    restart = ckpt.list_checkpoints(run)[-1][0]
    replayed = sorted({step for _, step in dead if step > restart})
    assert replayed and replayed[-1] < total  # the kill left steps that the resume redoes

    resumed = train(tmp_path, f"output_dir={run}", f"trainer.max_steps={total}",
                    f"trainer.checkpoint_every={every}", "trainer.resume=true", *QUIET)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, new = raw_events(run)
    # The resumed file starts with the purge mark at the first step it logs ...
    assert new[0] == ("START", restart + 1)
    assert [step for tag, step in new if tag == "train/total"] == list(range(restart + 1, total + 1))
    # ... so a reader that applies it (TensorBoard does) sees each step once.
    assert logged_steps(run) == list(range(1, total + 1))


@pytest.mark.parametrize("overrides, needle", [
    (["data.classification.kind=kermany", "data.classification.path={tmp}/no-such-folder"],
     "kermany: dataset path {tmp}/no-such-folder does not exist"),
    (["data.segmentation.kind=csv", "data.segmentation.path={tmp}/bad"],
     "{tmp}/bad/labels.csv: no 'image' column"),
    (["trainer.resume={tmp}/missing.pt"], "checkpoint not found: {tmp}/missing.pt"),
    # both on the command line (one alone replaces the file's other: mmdist.config.yaml_loader)
    (["trainer.max_steps=8", "trainer.max_epochs=2"],
     "trainer.max_steps (8) and trainer.max_epochs (2) are both set"),
    pytest.param(["engine.device=cuda"], "engine.device=cuda: torch sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")),
    (["output_dir={tmp}/used"], "output_dir {tmp}/used holds another run's files (summary.json)"),
], ids=["missing-folder", "unreadable-csv", "missing-checkpoint", "config", "no-gpu", "used-folder"])
def test_input_errors_print_one_line_and_exit_2(tmp_path, overrides, needle):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "summary.json").write_text("{}")  # another run finished here
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "labels.csv").write_text("path,label\na.png,0\n")
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    done = train(tmp_path, f"output_dir={tmp_path / 'run'}", *overrides)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle.format(tmp=tmp_path) in lines[0], done.stderr[-3000:]


def test_predict_with_a_missing_checkpoint_prints_one_line_and_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mmdist.predict", str(tmp_path / "gone.pt"),
                           str(tmp_path / "x.png")], cwd=REPO, env=clean_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "gone.pt") in lines[0], done.stderr


def test_datasets_are_read_before_the_process_group_waits_for_other_ranks(tmp_path):
    """Rank 0 of a two-rank job whose partner never comes: the dataset (here a missing folder;
    in a real job a cold cache being prepared) is dealt with before the process group is made,
    so the error comes at once instead of after the rendezvous timeout."""
    from mmdist.engine.distributed import free_port

    env = dict(clean_env(tmp_path), RANK="0", WORLD_SIZE="2", LOCAL_RANK="0",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    command = [sys.executable, "-m", "mmdist.train", "--config", str(TINY),
               f"output_dir={tmp_path / 'run'}", "engine.strategy=ddp",
               "engine.collective_timeout_s=300", "data.classification.kind=kermany",
               f"data.classification.path={tmp_path}/no-such-folder"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=250)
    assert done.returncode == 2 and "no-such-folder does not exist" in done.stderr, done.stderr
    assert time.monotonic() - started < 200  # not the rendezvous timeout (300 s)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_damaged_deepspeed_shard_is_a_one_line_checkpoint_error(tmp_path):
    """Resuming from a step whose ZeRO shard file was cut short (a full disk, a copy that
    stopped): DeepSpeed's own error (torch.load's EOFError) becomes one line naming the shards
    folder, exit 2, instead of a traceback."""
    run = tmp_path / "run"
    ds = ["engine.strategy=deepspeed", "engine.deepspeed_config=configs/deepspeed/zero1.json",
          "engine.device=cpu", "trainer.checkpoint_every=2", *QUIET]
    # DeepSpeed's CPU collectives are a C++ extension built on first use under ~/.cache: the
    # user's build, not one in the test's fresh HOME (minutes of compiling).
    built = os.environ.get("TORCH_EXTENSIONS_DIR",
                           str(Path.home() / ".cache" / "torch_extensions"))
    extra = {"TORCH_EXTENSIONS_DIR": built}
    first = train(tmp_path, f"output_dir={run}", "trainer.max_steps=2", *ds, extra_env=extra)
    assert first.returncode == 0, first.stderr[-3000:]
    shards = ckpt.checkpoint_dir(run) / "step_00000002"
    for shard in shards.glob("*optim_states.pt"):
        shard.write_bytes(b"")
    resumed = train(tmp_path, f"output_dir={run}", "trainer.max_steps=4", "trainer.resume=true",
                    *ds, extra_env=extra)
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    lines = [line for line in resumed.stderr.splitlines() if line.startswith("train: ")]
    assert len(lines) == 1 and f"{shards}: DeepSpeed could not load" in lines[0], resumed.stderr
