"""Every use case of msixd, built in one place from the kernel roots and the state file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from msixd.kernel import vfio
from msixd.kernel.roots import KernelRoots
from msixd.service.binding import Binding
from msixd.service.inventory import Inventory
from msixd.service.keeper import Keeper
from msixd.service.leases import Leases
from msixd.service.owner import Owner
from msixd.service.placement import Placement
from msixd.service.state import StateStore
from msixd.service.watch import Watcher


@dataclass(frozen=True)
class Services:
    inventory: Inventory
    owner: Owner
    placement: Placement
    binding: Binding
    watcher: Watcher
    keeper: Keeper
    leases: Leases

    @classmethod
    def build(cls, roots: KernelRoots, state_file: Path, vfio_api: ModuleType = vfio) -> Services:
        owner = Owner(roots, StateStore(state_file), vfio_api)
        inventory = Inventory(roots, owner)
        binding = Binding(roots, owner)
        return cls(
            inventory=inventory,
            owner=owner,
            placement=Placement(roots, inventory, owner),
            binding=binding,
            watcher=Watcher(inventory, owner),
            keeper=Keeper(roots, owner, binding),
            leases=Leases(roots, owner),
        )
