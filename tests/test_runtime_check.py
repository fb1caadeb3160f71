"""mmdist.runtime_check: one line when a CUDA build does not fit the driver."""

import pytest

from mmdist.runtime_check import build_mismatches, installed_builds, mismatch_lines

CUDA13 = {"torch 2.14.1+cu130": 13, "nvidia-dali-cuda130 2.4.0": 13}


def test_a_cuda13_build_on_a_cuda12_driver_is_named_with_the_fix():
    lines = mismatch_lines(CUDA13, (12, 4))
    assert len(lines) == 2
    assert lines[0].startswith("torch 2.14.1+cu130 is a CUDA 13 build but the NVIDIA driver "
                               "supports CUDA up to 12.4")
    assert lines[1].startswith("nvidia-dali-cuda130 2.4.0 is a CUDA 13 build")
    assert all("make CUDA=12" in line for line in lines)


@pytest.mark.parametrize("driver", [(13, 0), (13, 2), None])
def test_builds_the_driver_runs_say_nothing(driver):
    # Minor-version compatibility: a 13.x build runs on any 13.y driver; no driver, no GPU.
    assert mismatch_lines(CUDA13, driver) == []
    assert mismatch_lines({"torch 2.14.1+cu128": 12, "nvidia-dali-cuda120 2.4.0": 12},
                          driver or (12, 2)) == []


def test_two_dali_builds_at_once_are_named():
    (line,) = mismatch_lines({"nvidia-dali-cuda120 2.4.0": 12, "nvidia-dali-cuda130 2.4.0": 13},
                             None)
    assert "nvidia-dali-cuda120 2.4.0 and nvidia-dali-cuda130 2.4.0 are both installed" in line


def test_this_installation():
    """The installed torch and DALI are found with their CUDA majors, and they agree."""
    import torch

    builds = installed_builds()
    torch_builds = [major for name, major in builds.items() if name.startswith("torch ")]
    if torch.version.cuda:
        assert torch_builds == [int(torch.version.cuda.split(".")[0])]
    dali = {major for name, major in builds.items() if name.startswith("nvidia-dali-")}
    assert len(dali) <= 1 and (not dali or not torch_builds or dali == set(torch_builds))
    if not torch.cuda.is_available():
        return  # nothing to compare against here (no driver)
    assert build_mismatches() == []  # a GPU that torch can use fits the builds
