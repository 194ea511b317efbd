"""What msixd is to own, and how: the desired state, kept on disk after every change.

Per device: how many vectors msixd enables, where it placed each (as last
placed through msixd), and the driver the device had before msixd bound it
to vfio-pci. Thread-safe with one lock, a leaf: it is held only for the
dictionary and the durable write of the file (StateStore.save), never while
another lock is taken.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from msixd.service.state import DeviceState, StateStore


def _copy(state: DeviceState) -> DeviceState:
    return DeviceState(state.vectors, {i: list(c) for i, c in state.affinities.items()}, state.previous_driver)


class DesiredState:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._devices: dict[str, DeviceState] = store.load()
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, DeviceState]:
        with self._lock:
            return {bdf: _copy(state) for bdf, state in self._devices.items()}

    def get(self, bdf: str) -> DeviceState | None:
        with self._lock:
            state = self._devices.get(bdf)
            return _copy(state) if state else None

    def set_vectors(self, bdf: str, vectors: int) -> None:
        with self._lock:
            state = self._devices.setdefault(bdf, DeviceState())
            state.vectors = vectors
            self._store.save(self._devices)

    def set_driver(self, bdf: str, driver: str | None) -> None:
        with self._lock:
            self._devices.setdefault(bdf, DeviceState()).previous_driver = driver
            self._store.save(self._devices)

    def set_affinity(self, bdf: str, vector: int, cpus: Iterable[int]) -> None:
        with self._lock:
            self._devices.setdefault(bdf, DeviceState()).affinities[vector] = sorted(cpus)
            self._store.save(self._devices)

    def drop_vector(self, bdf: str, vector: int, vectors: int) -> None:
        """One vector released: its placement goes, the count becomes `vectors`."""
        with self._lock:
            state = self._devices.setdefault(bdf, DeviceState())
            state.vectors = vectors
            state.affinities.pop(vector, None)
            self._store.save(self._devices)

    def release(self, bdf: str) -> None:
        """msixd owns no vector of the device any more; a device it bound stays known, for Release."""
        with self._lock:
            state = self._devices.get(bdf)
            if state is None:
                return
            if state.previous_driver:
                state.vectors, state.affinities = 0, {}
            else:
                del self._devices[bdf]
            self._store.save(self._devices)

    def forget(self, bdf: str) -> DeviceState | None:
        with self._lock:
            state = self._devices.pop(bdf, None)
            self._store.save(self._devices)
            return state
