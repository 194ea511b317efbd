from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_STATE_UNSPECIFIED: _ClassVar[FeatureState]
    FEATURE_STATE_PRESENT: _ClassVar[FeatureState]
    FEATURE_STATE_ABSENT: _ClassVar[FeatureState]
    FEATURE_STATE_UNKNOWN: _ClassVar[FeatureState]

class MsixProbe(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MSIX_PROBE_UNSPECIFIED: _ClassVar[MsixProbe]
    MSIX_PROBE_PRESENT: _ClassVar[MsixProbe]
    MSIX_PROBE_ABSENT: _ClassVar[MsixProbe]
    MSIX_PROBE_UNREADABLE: _ClassVar[MsixProbe]

class IrqMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IRQ_MODE_UNSPECIFIED: _ClassVar[IrqMode]
    IRQ_MODE_NONE: _ClassVar[IrqMode]
    IRQ_MODE_MSI: _ClassVar[IrqMode]
    IRQ_MODE_MSIX: _ClassVar[IrqMode]

class DomainScheme(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOMAIN_SCHEME_UNSPECIFIED: _ClassVar[DomainScheme]
    DOMAIN_SCHEME_PER_DEVICE: _ClassVar[DomainScheme]
    DOMAIN_SCHEME_GLOBAL: _ClassVar[DomainScheme]

class DomainSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOMAIN_SOURCE_UNSPECIFIED: _ClassVar[DomainSource]
    DOMAIN_SOURCE_DEBUGFS: _ClassVar[DomainSource]
    DOMAIN_SOURCE_INFERRED: _ClassVar[DomainSource]

class IndexSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_SOURCE_UNSPECIFIED: _ClassVar[IndexSource]
    INDEX_SOURCE_ACTION: _ClassVar[IndexSource]
    INDEX_SOURCE_HWIRQ: _ClassVar[IndexSource]
    INDEX_SOURCE_GLOBAL_HWIRQ: _ClassVar[IndexSource]
    INDEX_SOURCE_ORDER: _ClassVar[IndexSource]

class ResizePath(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIZE_PATH_UNSPECIFIED: _ClassVar[ResizePath]
    RESIZE_PATH_ENABLE: _ClassVar[ResizePath]
    RESIZE_PATH_DYNAMIC: _ClassVar[ResizePath]
    RESIZE_PATH_REENABLE: _ClassVar[ResizePath]
    RESIZE_PATH_SHRINK: _ClassVar[ResizePath]
    RESIZE_PATH_UNCHANGED: _ClassVar[ResizePath]

class CountSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COUNT_SOURCE_UNSPECIFIED: _ClassVar[CountSource]
    COUNT_SOURCE_EVENTFD: _ClassVar[CountSource]
    COUNT_SOURCE_PER_CPU_COUNT: _ClassVar[CountSource]

class PolicyAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_ACTION_UNSPECIFIED: _ClassVar[PolicyAction]
    POLICY_ACTION_PIN: _ClassVar[PolicyAction]
    POLICY_ACTION_SPREAD: _ClassVar[PolicyAction]
    POLICY_ACTION_BALANCE: _ClassVar[PolicyAction]
    POLICY_ACTION_LEAVE: _ClassVar[PolicyAction]

class OnDrift(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ON_DRIFT_UNSPECIFIED: _ClassVar[OnDrift]
    ON_DRIFT_CORRECT: _ClassVar[OnDrift]
    ON_DRIFT_OBSERVE: _ClassVar[OnDrift]

class VectorPolicyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VECTOR_POLICY_STATE_UNSPECIFIED: _ClassVar[VectorPolicyState]
    VECTOR_POLICY_STATE_IN_PLACE: _ClassVar[VectorPolicyState]
    VECTOR_POLICY_STATE_PENDING: _ClassVar[VectorPolicyState]
    VECTOR_POLICY_STATE_DRIFTED: _ClassVar[VectorPolicyState]
    VECTOR_POLICY_STATE_UNCHANGEABLE: _ClassVar[VectorPolicyState]
    VECTOR_POLICY_STATE_NO_HANDLER: _ClassVar[VectorPolicyState]
    VECTOR_POLICY_STATE_ERROR: _ClassVar[VectorPolicyState]
    VECTOR_POLICY_STATE_LEFT_ALONE: _ClassVar[VectorPolicyState]

class IrqbalanceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IRQBALANCE_STATE_UNSPECIFIED: _ClassVar[IrqbalanceState]
    IRQBALANCE_STATE_DISABLED: _ClassVar[IrqbalanceState]
    IRQBALANCE_STATE_NOT_RUNNING: _ClassVar[IrqbalanceState]
    IRQBALANCE_STATE_STARTING: _ClassVar[IrqbalanceState]
    IRQBALANCE_STATE_NO_SOCKET: _ClassVar[IrqbalanceState]
    IRQBALANCE_STATE_BANNED: _ClassVar[IrqbalanceState]
    IRQBALANCE_STATE_PARTIAL: _ClassVar[IrqbalanceState]
    IRQBALANCE_STATE_FAILED: _ClassVar[IrqbalanceState]

class LeaseReturn(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_RETURN_UNSPECIFIED: _ClassVar[LeaseReturn]
    LEASE_RETURN_OWN: _ClassVar[LeaseReturn]
    LEASE_RETURN_RELEASE: _ClassVar[LeaseReturn]
FEATURE_STATE_UNSPECIFIED: FeatureState
FEATURE_STATE_PRESENT: FeatureState
FEATURE_STATE_ABSENT: FeatureState
FEATURE_STATE_UNKNOWN: FeatureState
MSIX_PROBE_UNSPECIFIED: MsixProbe
MSIX_PROBE_PRESENT: MsixProbe
MSIX_PROBE_ABSENT: MsixProbe
MSIX_PROBE_UNREADABLE: MsixProbe
IRQ_MODE_UNSPECIFIED: IrqMode
IRQ_MODE_NONE: IrqMode
IRQ_MODE_MSI: IrqMode
IRQ_MODE_MSIX: IrqMode
DOMAIN_SCHEME_UNSPECIFIED: DomainScheme
DOMAIN_SCHEME_PER_DEVICE: DomainScheme
DOMAIN_SCHEME_GLOBAL: DomainScheme
DOMAIN_SOURCE_UNSPECIFIED: DomainSource
DOMAIN_SOURCE_DEBUGFS: DomainSource
DOMAIN_SOURCE_INFERRED: DomainSource
INDEX_SOURCE_UNSPECIFIED: IndexSource
INDEX_SOURCE_ACTION: IndexSource
INDEX_SOURCE_HWIRQ: IndexSource
INDEX_SOURCE_GLOBAL_HWIRQ: IndexSource
INDEX_SOURCE_ORDER: IndexSource
RESIZE_PATH_UNSPECIFIED: ResizePath
RESIZE_PATH_ENABLE: ResizePath
RESIZE_PATH_DYNAMIC: ResizePath
RESIZE_PATH_REENABLE: ResizePath
RESIZE_PATH_SHRINK: ResizePath
RESIZE_PATH_UNCHANGED: ResizePath
COUNT_SOURCE_UNSPECIFIED: CountSource
COUNT_SOURCE_EVENTFD: CountSource
COUNT_SOURCE_PER_CPU_COUNT: CountSource
POLICY_ACTION_UNSPECIFIED: PolicyAction
POLICY_ACTION_PIN: PolicyAction
POLICY_ACTION_SPREAD: PolicyAction
POLICY_ACTION_BALANCE: PolicyAction
POLICY_ACTION_LEAVE: PolicyAction
ON_DRIFT_UNSPECIFIED: OnDrift
ON_DRIFT_CORRECT: OnDrift
ON_DRIFT_OBSERVE: OnDrift
VECTOR_POLICY_STATE_UNSPECIFIED: VectorPolicyState
VECTOR_POLICY_STATE_IN_PLACE: VectorPolicyState
VECTOR_POLICY_STATE_PENDING: VectorPolicyState
VECTOR_POLICY_STATE_DRIFTED: VectorPolicyState
VECTOR_POLICY_STATE_UNCHANGEABLE: VectorPolicyState
VECTOR_POLICY_STATE_NO_HANDLER: VectorPolicyState
VECTOR_POLICY_STATE_ERROR: VectorPolicyState
VECTOR_POLICY_STATE_LEFT_ALONE: VectorPolicyState
IRQBALANCE_STATE_UNSPECIFIED: IrqbalanceState
IRQBALANCE_STATE_DISABLED: IrqbalanceState
IRQBALANCE_STATE_NOT_RUNNING: IrqbalanceState
IRQBALANCE_STATE_STARTING: IrqbalanceState
IRQBALANCE_STATE_NO_SOCKET: IrqbalanceState
IRQBALANCE_STATE_BANNED: IrqbalanceState
IRQBALANCE_STATE_PARTIAL: IrqbalanceState
IRQBALANCE_STATE_FAILED: IrqbalanceState
LEASE_RETURN_UNSPECIFIED: LeaseReturn
LEASE_RETURN_OWN: LeaseReturn
LEASE_RETURN_RELEASE: LeaseReturn

class EchoRequest(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Feature(_message.Message):
    __slots__ = ("state", "detail")
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    state: FeatureState
    detail: str
    def __init__(self, state: _Optional[_Union[FeatureState, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class KernelFeatures(_message.Message):
    __slots__ = ("vfio", "vfio_pci", "iommu_groups", "interrupt_remapping", "per_device_msi_domains", "dynamic_msix", "debugfs_irq", "vfio_noiommu")
    VFIO_FIELD_NUMBER: _ClassVar[int]
    VFIO_PCI_FIELD_NUMBER: _ClassVar[int]
    IOMMU_GROUPS_FIELD_NUMBER: _ClassVar[int]
    INTERRUPT_REMAPPING_FIELD_NUMBER: _ClassVar[int]
    PER_DEVICE_MSI_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_MSIX_FIELD_NUMBER: _ClassVar[int]
    DEBUGFS_IRQ_FIELD_NUMBER: _ClassVar[int]
    VFIO_NOIOMMU_FIELD_NUMBER: _ClassVar[int]
    vfio: Feature
    vfio_pci: Feature
    iommu_groups: Feature
    interrupt_remapping: Feature
    per_device_msi_domains: Feature
    dynamic_msix: Feature
    debugfs_irq: Feature
    vfio_noiommu: Feature
    def __init__(self, vfio: _Optional[_Union[Feature, _Mapping]] = ..., vfio_pci: _Optional[_Union[Feature, _Mapping]] = ..., iommu_groups: _Optional[_Union[Feature, _Mapping]] = ..., interrupt_remapping: _Optional[_Union[Feature, _Mapping]] = ..., per_device_msi_domains: _Optional[_Union[Feature, _Mapping]] = ..., dynamic_msix: _Optional[_Union[Feature, _Mapping]] = ..., debugfs_irq: _Optional[_Union[Feature, _Mapping]] = ..., vfio_noiommu: _Optional[_Union[Feature, _Mapping]] = ...) -> None: ...

class Cpus(_message.Message):
    __slots__ = ("online", "possible", "isolated", "nohz_full")
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    POSSIBLE_FIELD_NUMBER: _ClassVar[int]
    ISOLATED_FIELD_NUMBER: _ClassVar[int]
    NOHZ_FULL_FIELD_NUMBER: _ClassVar[int]
    online: _containers.RepeatedScalarFieldContainer[int]
    possible: _containers.RepeatedScalarFieldContainer[int]
    isolated: _containers.RepeatedScalarFieldContainer[int]
    nohz_full: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, online: _Optional[_Iterable[int]] = ..., possible: _Optional[_Iterable[int]] = ..., isolated: _Optional[_Iterable[int]] = ..., nohz_full: _Optional[_Iterable[int]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("daemon_version", "kernel_release", "features", "cpus", "uptime_seconds")
    DAEMON_VERSION_FIELD_NUMBER: _ClassVar[int]
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    daemon_version: str
    kernel_release: str
    features: KernelFeatures
    cpus: Cpus
    uptime_seconds: float
    def __init__(self, daemon_version: _Optional[str] = ..., kernel_release: _Optional[str] = ..., features: _Optional[_Union[KernelFeatures, _Mapping]] = ..., cpus: _Optional[_Union[Cpus, _Mapping]] = ..., uptime_seconds: _Optional[float] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("all_devices", "include_vectors")
    ALL_DEVICES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    all_devices: bool
    include_vectors: bool
    def __init__(self, all_devices: _Optional[bool] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class GetDeviceRequest(_message.Message):
    __slots__ = ("bdf",)
    BDF_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    def __init__(self, bdf: _Optional[str] = ...) -> None: ...

class MsixCapability(_message.Message):
    __slots__ = ("offset", "table_size", "enabled", "function_masked", "table_bir", "table_offset", "pba_bir", "pba_offset")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TABLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_MASKED_FIELD_NUMBER: _ClassVar[int]
    TABLE_BIR_FIELD_NUMBER: _ClassVar[int]
    TABLE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PBA_BIR_FIELD_NUMBER: _ClassVar[int]
    PBA_OFFSET_FIELD_NUMBER: _ClassVar[int]
    offset: int
    table_size: int
    enabled: bool
    function_masked: bool
    table_bir: int
    table_offset: int
    pba_bir: int
    pba_offset: int
    def __init__(self, offset: _Optional[int] = ..., table_size: _Optional[int] = ..., enabled: _Optional[bool] = ..., function_masked: _Optional[bool] = ..., table_bir: _Optional[int] = ..., table_offset: _Optional[int] = ..., pba_bir: _Optional[int] = ..., pba_offset: _Optional[int] = ...) -> None: ...

class DomainRef(_message.Message):
    __slots__ = ("name", "scheme", "remapped", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    REMAPPED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    scheme: DomainScheme
    remapped: bool
    source: DomainSource
    def __init__(self, name: _Optional[str] = ..., scheme: _Optional[_Union[DomainScheme, str]] = ..., remapped: _Optional[bool] = ..., source: _Optional[_Union[DomainSource, str]] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("bdf", "vendor_id", "device_id", "class_code", "subsystem_vendor_id", "subsystem_device_id", "driver", "iommu_group", "numa_node", "local_cpus", "msix_probe", "msix", "irq_mode", "vectors_allocated", "domain", "vectors", "ownership")
    BDF_FIELD_NUMBER: _ClassVar[int]
    VENDOR_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_CODE_FIELD_NUMBER: _ClassVar[int]
    SUBSYSTEM_VENDOR_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSYSTEM_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    IOMMU_GROUP_FIELD_NUMBER: _ClassVar[int]
    NUMA_NODE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_CPUS_FIELD_NUMBER: _ClassVar[int]
    MSIX_PROBE_FIELD_NUMBER: _ClassVar[int]
    MSIX_FIELD_NUMBER: _ClassVar[int]
    IRQ_MODE_FIELD_NUMBER: _ClassVar[int]
    VECTORS_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    OWNERSHIP_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    vendor_id: int
    device_id: int
    class_code: int
    subsystem_vendor_id: int
    subsystem_device_id: int
    driver: str
    iommu_group: int
    numa_node: int
    local_cpus: _containers.RepeatedScalarFieldContainer[int]
    msix_probe: MsixProbe
    msix: MsixCapability
    irq_mode: IrqMode
    vectors_allocated: int
    domain: DomainRef
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    ownership: Ownership
    def __init__(self, bdf: _Optional[str] = ..., vendor_id: _Optional[int] = ..., device_id: _Optional[int] = ..., class_code: _Optional[int] = ..., subsystem_vendor_id: _Optional[int] = ..., subsystem_device_id: _Optional[int] = ..., driver: _Optional[str] = ..., iommu_group: _Optional[int] = ..., numa_node: _Optional[int] = ..., local_cpus: _Optional[_Iterable[int]] = ..., msix_probe: _Optional[_Union[MsixProbe, str]] = ..., msix: _Optional[_Union[MsixCapability, _Mapping]] = ..., irq_mode: _Optional[_Union[IrqMode, str]] = ..., vectors_allocated: _Optional[int] = ..., domain: _Optional[_Union[DomainRef, _Mapping]] = ..., vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., ownership: _Optional[_Union[Ownership, _Mapping]] = ...) -> None: ...

class Ownership(_message.Message):
    __slots__ = ("owned", "dynamic_msix", "vectors_enabled", "iommu_group")
    OWNED_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_MSIX_FIELD_NUMBER: _ClassVar[int]
    VECTORS_ENABLED_FIELD_NUMBER: _ClassVar[int]
    IOMMU_GROUP_FIELD_NUMBER: _ClassVar[int]
    owned: bool
    dynamic_msix: bool
    vectors_enabled: int
    iommu_group: int
    def __init__(self, owned: _Optional[bool] = ..., dynamic_msix: _Optional[bool] = ..., vectors_enabled: _Optional[int] = ..., iommu_group: _Optional[int] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("index", "index_source", "irq", "chip", "hwirq", "actions", "type", "affinity", "effective_affinity", "affinity_settable", "affinity_reason", "node", "total_count", "per_cpu_count", "eventfd_count", "lease")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEX_SOURCE_FIELD_NUMBER: _ClassVar[int]
    IRQ_FIELD_NUMBER: _ClassVar[int]
    CHIP_FIELD_NUMBER: _ClassVar[int]
    HWIRQ_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_SETTABLE_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_REASON_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    PER_CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVENTFD_COUNT_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    index: int
    index_source: IndexSource
    irq: int
    chip: str
    hwirq: int
    actions: _containers.RepeatedScalarFieldContainer[str]
    type: str
    affinity: _containers.RepeatedScalarFieldContainer[int]
    effective_affinity: _containers.RepeatedScalarFieldContainer[int]
    affinity_settable: bool
    affinity_reason: str
    node: int
    total_count: int
    per_cpu_count: _containers.RepeatedScalarFieldContainer[int]
    eventfd_count: int
    lease: LeaseHolder
    def __init__(self, index: _Optional[int] = ..., index_source: _Optional[_Union[IndexSource, str]] = ..., irq: _Optional[int] = ..., chip: _Optional[str] = ..., hwirq: _Optional[int] = ..., actions: _Optional[_Iterable[str]] = ..., type: _Optional[str] = ..., affinity: _Optional[_Iterable[int]] = ..., effective_affinity: _Optional[_Iterable[int]] = ..., affinity_settable: _Optional[bool] = ..., affinity_reason: _Optional[str] = ..., node: _Optional[int] = ..., total_count: _Optional[int] = ..., per_cpu_count: _Optional[_Iterable[int]] = ..., eventfd_count: _Optional[int] = ..., lease: _Optional[_Union[LeaseHolder, _Mapping]] = ...) -> None: ...

class ListDomainsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Domain(_message.Message):
    __slots__ = ("name", "scheme", "source", "remapped", "bdfs", "size", "mapped", "parents")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REMAPPED_FIELD_NUMBER: _ClassVar[int]
    BDFS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MAPPED_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    scheme: DomainScheme
    source: DomainSource
    remapped: bool
    bdfs: _containers.RepeatedScalarFieldContainer[str]
    size: int
    mapped: int
    parents: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., scheme: _Optional[_Union[DomainScheme, str]] = ..., source: _Optional[_Union[DomainSource, str]] = ..., remapped: _Optional[bool] = ..., bdfs: _Optional[_Iterable[str]] = ..., size: _Optional[int] = ..., mapped: _Optional[int] = ..., parents: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDomainsResponse(_message.Message):
    __slots__ = ("domains",)
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedCompositeFieldContainer[Domain]
    def __init__(self, domains: _Optional[_Iterable[_Union[Domain, _Mapping]]] = ...) -> None: ...

class BindRequest(_message.Message):
    __slots__ = ("bdf",)
    BDF_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    def __init__(self, bdf: _Optional[str] = ...) -> None: ...

class BindResponse(_message.Message):
    __slots__ = ("bdf", "previous_driver", "driver", "iommu_group", "unchanged")
    BDF_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DRIVER_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    IOMMU_GROUP_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    previous_driver: str
    driver: str
    iommu_group: int
    unchanged: bool
    def __init__(self, bdf: _Optional[str] = ..., previous_driver: _Optional[str] = ..., driver: _Optional[str] = ..., iommu_group: _Optional[int] = ..., unchanged: _Optional[bool] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("bdf", "force")
    BDF_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    force: bool
    def __init__(self, bdf: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("bdf", "driver", "vectors_released")
    BDF_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    VECTORS_RELEASED_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    driver: str
    vectors_released: int
    def __init__(self, bdf: _Optional[str] = ..., driver: _Optional[str] = ..., vectors_released: _Optional[int] = ...) -> None: ...

class EnableRequest(_message.Message):
    __slots__ = ("bdf", "vectors", "force")
    BDF_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    vectors: int
    force: bool
    def __init__(self, bdf: _Optional[str] = ..., vectors: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class EnableResponse(_message.Message):
    __slots__ = ("path", "vectors_before", "device")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VECTORS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    path: ResizePath
    vectors_before: int
    device: Device
    def __init__(self, path: _Optional[_Union[ResizePath, str]] = ..., vectors_before: _Optional[int] = ..., device: _Optional[_Union[Device, _Mapping]] = ...) -> None: ...

class DisableRequest(_message.Message):
    __slots__ = ("bdf", "vector", "force")
    BDF_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    vector: int
    force: bool
    def __init__(self, bdf: _Optional[str] = ..., vector: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class DisableResponse(_message.Message):
    __slots__ = ("released", "device")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    released: _containers.RepeatedScalarFieldContainer[int]
    device: Device
    def __init__(self, released: _Optional[_Iterable[int]] = ..., device: _Optional[_Union[Device, _Mapping]] = ...) -> None: ...

class SetAffinityRequest(_message.Message):
    __slots__ = ("bdf", "vector", "cpus", "force", "dry_run")
    BDF_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    vector: int
    cpus: str
    force: bool
    dry_run: bool
    def __init__(self, bdf: _Optional[str] = ..., vector: _Optional[int] = ..., cpus: _Optional[str] = ..., force: _Optional[bool] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class SetAffinityResponse(_message.Message):
    __slots__ = ("bdf", "vector", "irq", "affinity", "effective_affinity", "previous_affinity", "dry_run")
    BDF_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    IRQ_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    vector: int
    irq: int
    affinity: _containers.RepeatedScalarFieldContainer[int]
    effective_affinity: _containers.RepeatedScalarFieldContainer[int]
    previous_affinity: _containers.RepeatedScalarFieldContainer[int]
    dry_run: bool
    def __init__(self, bdf: _Optional[str] = ..., vector: _Optional[int] = ..., irq: _Optional[int] = ..., affinity: _Optional[_Iterable[int]] = ..., effective_affinity: _Optional[_Iterable[int]] = ..., previous_affinity: _Optional[_Iterable[int]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class SpreadRequest(_message.Message):
    __slots__ = ("bdf", "cpus", "dry_run", "force")
    BDF_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    cpus: str
    dry_run: bool
    force: bool
    def __init__(self, bdf: _Optional[str] = ..., cpus: _Optional[str] = ..., dry_run: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("vector", "irq", "cpu", "effective_affinity", "error")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    IRQ_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    vector: int
    irq: int
    cpu: int
    effective_affinity: _containers.RepeatedScalarFieldContainer[int]
    error: str
    def __init__(self, vector: _Optional[int] = ..., irq: _Optional[int] = ..., cpu: _Optional[int] = ..., effective_affinity: _Optional[_Iterable[int]] = ..., error: _Optional[str] = ...) -> None: ...

class SpreadResponse(_message.Message):
    __slots__ = ("placements", "dry_run", "cpus")
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    placements: _containers.RepeatedCompositeFieldContainer[Placement]
    dry_run: bool
    cpus: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, placements: _Optional[_Iterable[_Union[Placement, _Mapping]]] = ..., dry_run: _Optional[bool] = ..., cpus: _Optional[_Iterable[int]] = ...) -> None: ...

class TriggerRequest(_message.Message):
    __slots__ = ("bdf", "vector")
    BDF_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    vector: int
    def __init__(self, bdf: _Optional[str] = ..., vector: _Optional[int] = ...) -> None: ...

class TriggerResponse(_message.Message):
    __slots__ = ("eventfd_count", "bdf")
    EVENTFD_COUNT_FIELD_NUMBER: _ClassVar[int]
    BDF_FIELD_NUMBER: _ClassVar[int]
    eventfd_count: int
    bdf: str
    def __init__(self, eventfd_count: _Optional[int] = ..., bdf: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("bdf", "interval_ms", "count")
    BDF_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    interval_ms: int
    count: int
    def __init__(self, bdf: _Optional[str] = ..., interval_ms: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class VectorSample(_message.Message):
    __slots__ = ("vector", "irq", "total", "rate", "source", "per_cpu_count")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    IRQ_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PER_CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    vector: int
    irq: int
    total: int
    rate: float
    source: CountSource
    per_cpu_count: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, vector: _Optional[int] = ..., irq: _Optional[int] = ..., total: _Optional[int] = ..., rate: _Optional[float] = ..., source: _Optional[_Union[CountSource, str]] = ..., per_cpu_count: _Optional[_Iterable[int]] = ...) -> None: ...

class WatchSample(_message.Message):
    __slots__ = ("bdf", "time", "vectors")
    BDF_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    time: float
    vectors: _containers.RepeatedCompositeFieldContainer[VectorSample]
    def __init__(self, bdf: _Optional[str] = ..., time: _Optional[float] = ..., vectors: _Optional[_Iterable[_Union[VectorSample, _Mapping]]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("bdf",)
    BDF_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    def __init__(self, bdf: _Optional[str] = ...) -> None: ...

class PolicyRule(_message.Message):
    __slots__ = ("name", "file", "line", "order", "match", "action", "cpus", "cpus_local", "force", "on_drift")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    CPUS_LOCAL_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    ON_DRIFT_FIELD_NUMBER: _ClassVar[int]
    name: str
    file: str
    line: int
    order: int
    match: str
    action: PolicyAction
    cpus: _containers.RepeatedScalarFieldContainer[int]
    cpus_local: bool
    force: bool
    on_drift: OnDrift
    def __init__(self, name: _Optional[str] = ..., file: _Optional[str] = ..., line: _Optional[int] = ..., order: _Optional[int] = ..., match: _Optional[str] = ..., action: _Optional[_Union[PolicyAction, str]] = ..., cpus: _Optional[_Iterable[int]] = ..., cpus_local: _Optional[bool] = ..., force: _Optional[bool] = ..., on_drift: _Optional[_Union[OnDrift, str]] = ...) -> None: ...

class PolicyVector(_message.Message):
    __slots__ = ("bdf", "vector", "irq", "rule", "shadowed", "affinity", "target", "state", "detail")
    BDF_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    IRQ_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    SHADOWED_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    vector: int
    irq: int
    rule: str
    shadowed: _containers.RepeatedScalarFieldContainer[str]
    affinity: _containers.RepeatedScalarFieldContainer[int]
    target: _containers.RepeatedScalarFieldContainer[int]
    state: VectorPolicyState
    detail: str
    def __init__(self, bdf: _Optional[str] = ..., vector: _Optional[int] = ..., irq: _Optional[int] = ..., rule: _Optional[str] = ..., shadowed: _Optional[_Iterable[str]] = ..., affinity: _Optional[_Iterable[int]] = ..., target: _Optional[_Iterable[int]] = ..., state: _Optional[_Union[VectorPolicyState, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class IrqbalanceLink(_message.Message):
    __slots__ = ("state", "pid", "socket", "wanted", "banned", "detail")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    WANTED_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    state: IrqbalanceState
    pid: int
    socket: str
    wanted: _containers.RepeatedScalarFieldContainer[int]
    banned: _containers.RepeatedScalarFieldContainer[int]
    detail: str
    def __init__(self, state: _Optional[_Union[IrqbalanceState, str]] = ..., pid: _Optional[int] = ..., socket: _Optional[str] = ..., wanted: _Optional[_Iterable[int]] = ..., banned: _Optional[_Iterable[int]] = ..., detail: _Optional[str] = ...) -> None: ...

class ReconcilerStatus(_message.Message):
    __slots__ = ("interval_seconds", "uevents", "passes", "last_pass_seconds", "last_pass_time", "corrections", "failures", "drift_observed")
    class CorrectionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UEVENTS_FIELD_NUMBER: _ClassVar[int]
    PASSES_FIELD_NUMBER: _ClassVar[int]
    LAST_PASS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_PASS_TIME_FIELD_NUMBER: _ClassVar[int]
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    DRIFT_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    interval_seconds: float
    uevents: bool
    passes: int
    last_pass_seconds: float
    last_pass_time: float
    corrections: _containers.ScalarMap[str, int]
    failures: int
    drift_observed: int
    def __init__(self, interval_seconds: _Optional[float] = ..., uevents: _Optional[bool] = ..., passes: _Optional[int] = ..., last_pass_seconds: _Optional[float] = ..., last_pass_time: _Optional[float] = ..., corrections: _Optional[_Mapping[str, int]] = ..., failures: _Optional[int] = ..., drift_observed: _Optional[int] = ...) -> None: ...

class PolicyReport(_message.Message):
    __slots__ = ("directory", "files", "trial", "rules", "vectors", "irqbalance", "reconciler")
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    IRQBALANCE_FIELD_NUMBER: _ClassVar[int]
    RECONCILER_FIELD_NUMBER: _ClassVar[int]
    directory: str
    files: _containers.RepeatedScalarFieldContainer[str]
    trial: str
    rules: _containers.RepeatedCompositeFieldContainer[PolicyRule]
    vectors: _containers.RepeatedCompositeFieldContainer[PolicyVector]
    irqbalance: IrqbalanceLink
    reconciler: ReconcilerStatus
    def __init__(self, directory: _Optional[str] = ..., files: _Optional[_Iterable[str]] = ..., trial: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[PolicyRule, _Mapping]]] = ..., vectors: _Optional[_Iterable[_Union[PolicyVector, _Mapping]]] = ..., irqbalance: _Optional[_Union[IrqbalanceLink, _Mapping]] = ..., reconciler: _Optional[_Union[ReconcilerStatus, _Mapping]] = ...) -> None: ...

class DiffPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DiffPolicyResponse(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[PolicyVector]
    def __init__(self, changes: _Optional[_Iterable[_Union[PolicyVector, _Mapping]]] = ...) -> None: ...

class ApplyPolicyRequest(_message.Message):
    __slots__ = ("dry_run", "file_name", "file_content")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    FILE_CONTENT_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    file_name: str
    file_content: bytes
    def __init__(self, dry_run: _Optional[bool] = ..., file_name: _Optional[str] = ..., file_content: _Optional[bytes] = ...) -> None: ...

class PolicyCorrection(_message.Message):
    __slots__ = ("bdf", "vector", "irq", "rule", "previous", "target", "effective", "error")
    BDF_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    IRQ_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    vector: int
    irq: int
    rule: str
    previous: _containers.RepeatedScalarFieldContainer[int]
    target: _containers.RepeatedScalarFieldContainer[int]
    effective: _containers.RepeatedScalarFieldContainer[int]
    error: str
    def __init__(self, bdf: _Optional[str] = ..., vector: _Optional[int] = ..., irq: _Optional[int] = ..., rule: _Optional[str] = ..., previous: _Optional[_Iterable[int]] = ..., target: _Optional[_Iterable[int]] = ..., effective: _Optional[_Iterable[int]] = ..., error: _Optional[str] = ...) -> None: ...

class ApplyPolicyResponse(_message.Message):
    __slots__ = ("dry_run", "rules", "files", "trial", "pending", "corrections", "problems")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    rules: _containers.RepeatedCompositeFieldContainer[PolicyRule]
    files: _containers.RepeatedScalarFieldContainer[str]
    trial: str
    pending: _containers.RepeatedCompositeFieldContainer[PolicyVector]
    corrections: _containers.RepeatedCompositeFieldContainer[PolicyCorrection]
    problems: _containers.RepeatedCompositeFieldContainer[PolicyVector]
    def __init__(self, dry_run: _Optional[bool] = ..., rules: _Optional[_Iterable[_Union[PolicyRule, _Mapping]]] = ..., files: _Optional[_Iterable[str]] = ..., trial: _Optional[str] = ..., pending: _Optional[_Iterable[_Union[PolicyVector, _Mapping]]] = ..., corrections: _Optional[_Iterable[_Union[PolicyCorrection, _Mapping]]] = ..., problems: _Optional[_Iterable[_Union[PolicyVector, _Mapping]]] = ...) -> None: ...

class LeaseHolder(_message.Message):
    __slots__ = ("lease", "uid", "pid", "since")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    lease: str
    uid: int
    pid: int
    since: float
    def __init__(self, lease: _Optional[str] = ..., uid: _Optional[int] = ..., pid: _Optional[int] = ..., since: _Optional[float] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("id", "bdf", "vectors", "irqs", "holder_uid", "holder_gid", "holder_pid", "since", "device_fd", "on_return")
    ID_FIELD_NUMBER: _ClassVar[int]
    BDF_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    IRQS_FIELD_NUMBER: _ClassVar[int]
    HOLDER_UID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_GID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_PID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FD_FIELD_NUMBER: _ClassVar[int]
    ON_RETURN_FIELD_NUMBER: _ClassVar[int]
    id: str
    bdf: str
    vectors: _containers.RepeatedScalarFieldContainer[int]
    irqs: _containers.RepeatedScalarFieldContainer[int]
    holder_uid: int
    holder_gid: int
    holder_pid: int
    since: float
    device_fd: bool
    on_return: LeaseReturn
    def __init__(self, id: _Optional[str] = ..., bdf: _Optional[str] = ..., vectors: _Optional[_Iterable[int]] = ..., irqs: _Optional[_Iterable[int]] = ..., holder_uid: _Optional[int] = ..., holder_gid: _Optional[int] = ..., holder_pid: _Optional[int] = ..., since: _Optional[float] = ..., device_fd: _Optional[bool] = ..., on_return: _Optional[_Union[LeaseReturn, str]] = ...) -> None: ...

class ListLeasesRequest(_message.Message):
    __slots__ = ("bdf",)
    BDF_FIELD_NUMBER: _ClassVar[int]
    bdf: str
    def __init__(self, bdf: _Optional[str] = ...) -> None: ...

class ListLeasesResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class RevokeLeaseRequest(_message.Message):
    __slots__ = ("lease", "reason")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease: str
    reason: str
    def __init__(self, lease: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeLeaseResponse(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...
