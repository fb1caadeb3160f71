"""A sweep's state: sweep.json written before cells could share a run still reads, as one run per
cell."""

from __future__ import annotations

import json

from mmdist.launch.sweep_state import read_state


def test_a_sweep_json_from_before_shared_runs_reads_as_one_run_per_cell(tmp_path):
    old = {"cells": {"umtl_seed0": {"job_id": "12_0", "values": {"seed": 0}, "local": False}},
           "spec": "x.yaml", "name": "x"}
    (tmp_path / "sweep.json").write_text(json.dumps(old))
    state = read_state(tmp_path)
    assert state["runs"] == old["cells"]
    assert state["cells"] == {"umtl_seed0": {"values": {"seed": 0}, "run": "umtl_seed0"}}
