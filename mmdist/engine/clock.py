"""Training time and throughput, measured honestly on asynchronous devices.

CUDA kernels run after the Python call that launched them returns, so a clock read right after a
step measures the launch, not the work. The clock below synchronises the device whenever it is
read, and only then: between reads the steps run without a host sync. It counts the whole loop
(data waits included, and also counted apart as ``data_wait_s``) and leaves out what is not
training: validation, checkpoints, images.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator


class TrainingClock:
    def __init__(self, synchronize: Callable[[], None]):
        self._synchronize = synchronize
        self.seconds = 0.0
        """Training seconds so far (synchronised at each read)."""
        self.images = 0
        self.data_wait_s = 0.0
        """Host seconds spent waiting for the next batch (counted in ``seconds`` too)."""
        self._running_since: float | None = None
        self._window = (0.0, 0)

    def start(self) -> None:
        self._running_since = time.perf_counter()

    def waiting_for(self, batches: Iterable) -> Iterator:
        """``batches``, timing each wait for the next one into ``data_wait_s``."""
        iterator = iter(batches)
        while True:
            tick = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.data_wait_s += time.perf_counter() - tick
            yield batch

    def add_images(self, count: int) -> None:
        self.images += count

    def pause(self) -> None:
        """Before work that is not training: the device finishes the steps first."""
        if self._running_since is not None:
            self._synchronize()
            self.seconds += time.perf_counter() - self._running_since
            self._running_since = None

    def resume(self) -> None:
        if self._running_since is None:
            self._running_since = time.perf_counter()

    def read(self) -> float:
        """Training seconds up to now, with the device's queued steps finished."""
        if self._running_since is not None:
            self._synchronize()
            now = time.perf_counter()
            self.seconds += now - self._running_since
            self._running_since = now
        return self.seconds

    def window_rate(self) -> float:
        """Images per second (this rank) since the previous call."""
        seconds, images = self.read(), self.images
        last_seconds, last_images = self._window
        self._window = (seconds, images)
        return (images - last_images) / max(seconds - last_seconds, 1e-9)
