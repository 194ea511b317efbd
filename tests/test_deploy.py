"""deploy/: the Kubernetes DaemonSet gets the host's devices and mutual TLS, and its config parses."""

from __future__ import annotations

from pathlib import Path

import yaml

from msixd.config import parse

REPO = Path(__file__).resolve().parents[1]


def test_daemonset() -> None:
    documents = list(yaml.safe_load_all((REPO / "deploy/kubernetes/msixd.yaml").read_text()))
    config_map, daemonset = documents
    assert daemonset["kind"] == "DaemonSet"
    spec = daemonset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["securityContext"]["privileged"] is True and spec["hostPID"] is True
    host_paths = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert {"/dev/vfio", "/sys", "/proc", "/run/msixd"} <= host_paths
    assert any("secret" in v for v in spec["volumes"]), "TLS comes from a Secret"
    config = parse(config_map["data"]["msixd.toml"])
    assert config.tcp_listen and config.tls_client_ca, "orchestration reaches each host over mTLS"
    assert config.tls_admins, "only named certificates may change things"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {str(config.tls_cert.parent), "/run/msixd", "/host/sys", "/host/proc", "/host/dev/vfio"} <= mounts


def test_example_config_parses_uncommented() -> None:
    lines = (REPO / "deploy/msixd.toml.example").read_text().splitlines()
    commented = [line[1:] for line in lines if line.startswith("#") and " = " in line and not line.startswith("# ")]
    settings = "\n".join(commented)
    assert parse(settings).metrics_listen == "127.0.0.1:9477"
