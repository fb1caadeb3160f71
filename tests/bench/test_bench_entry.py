"""python -m mmdist.bench: a GPU asked for with --device on a machine without one is one line
naming --device, for every benchmark that has the option, before any work starts."""

import pytest
import torch

from mmdist.bench.__main__ import main

GPU_ASKED = [("step", "cuda"), ("ddp", "cuda"), ("pack", "cuda"), ("feed", "cuda"),
             ("augment", "gpu")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("name, device", GPU_ASKED)
def test_a_missing_gpu_is_one_line_naming_the_option(name, device, capsys, tmp_path,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a benchmark would write lands here, and must not
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    code = main([name, "--device", device])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"bench {name}: --device={device}: "), err
    assert "torch sees no CUDA device" in err and "set --device=cpu" in err
    assert not any(tmp_path.iterdir())
