"""Regenerate the committed Python API from proto/msix/v1/msix.proto.

    python proto/generate.py            # writes msixd/api/
    python proto/generate.py --out DIR  # writes DIR (the staleness test uses this)

protoc's own generators write the messages (``msix_pb2.py`` and its stub
``msix_pb2.pyi``) and the grpc module (``msix_pb2_grpc.py``); mypy-protobuf's
grpc plugin writes the grpc module's stub (``msix_pb2_grpc.pyi``), so a call on
``MsixServiceStub`` is typed with its request and response messages.

The grpc module and its stub import the message module by the proto's package
path (``from msix.v1 import msix_pb2``); that is rewritten to a relative import
so the code lives inside ``msixd.api`` without a top-level ``msix`` package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

# Installed beside this interpreter by the mypy-protobuf package (the `test` extra).
MYPY_GRPC_PLUGIN = Path(sys.executable).parent / "protoc-gen-mypy_grpc"

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
PROTOS = ["msix/v1/msix.proto"]


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--pyi_out={out}",
        f"--plugin=protoc-gen-mypy_grpc={MYPY_GRPC_PLUGIN}",
        f"--mypy_grpc_out={out}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for grpc_module in [*out.rglob("*_pb2_grpc.py"), *out.rglob("*_pb2_grpc.pyi")]:
        text = grpc_module.read_text()
        text = text.replace("from msix.v1 import ", "from . import ")
        grpc_module.write_text(text)
    for package in {p.parent for p in out.rglob("*_pb2.py")} | {out / "msix"}:
        while package != out.parent and package.is_relative_to(out):
            (package / "__init__.py").touch()
            package = package.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "msixd" / "api")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
