"""Every use case of msixd, built in one place from the kernel roots and the state file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from msixd.kernel import vfio
from msixd.kernel.roots import KernelRoots
from msixd.service.binding import Binding
from msixd.service.inventory import Inventory
from msixd.service.irqbalance import IrqbalanceLink
from msixd.service.keeper import Keeper
from msixd.service.leases import Leases
from msixd.service.owner import Owner
from msixd.service.placement import Placement
from msixd.service.reconciler import Reconciler, UeventSource
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
    irqbalance: IrqbalanceLink
    reconciler: Reconciler
    leases: Leases

    @classmethod
    def build(cls, roots: KernelRoots, state_file: Path, vfio_api: ModuleType = vfio, policy_dir: Path | None = None,
              interval: float = 10.0, irqbalance: bool = True, uevents: UeventSource | None = None) -> Services:
        """policy_dir: the placement rules (default: policy.d beside the state file, absent in tests);
        irqbalance: whether placed IRQs are banned from it; uevents: the kernel's, when they can be had."""
        owner = Owner(roots, StateStore(state_file), vfio_api)
        inventory = Inventory(roots, owner)
        binding = Binding(roots, owner)
        placement = Placement(roots, inventory, owner)
        # The abstract socket irqbalance falls back to belongs to this machine: only for its own roots.
        link = IrqbalanceLink(roots, state_file.with_name("irqbalance.json"), irqbalance,
                              abstract_fallback=roots == KernelRoots())
        reconciler = Reconciler(roots, placement, owner, policy_dir or state_file.with_name("policy.d"), interval,
                                link, uevents)
        return cls(
            inventory=inventory,
            owner=owner,
            placement=placement,
            binding=binding,
            watcher=Watcher(inventory, owner),
            keeper=Keeper(roots, owner, binding),
            irqbalance=link,
            reconciler=reconciler,
            leases=Leases(roots, owner),
        )
