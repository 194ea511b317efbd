"""RPC latency and throughput over the Unix socket, against two floors measured in the same run.

A real msixd process serves a captured 6.12 guest tree (an e1000e, an nvme, a
virtio-net and virtme's virtio devices). 1, 8 and 32 client processes each
send about SAMPLES // clients requests, back to back, so every p99 rests on a
few dozen of the slowest samples, not on two or three. The floors:

- msixd's own Echo RPC on the same server: the same gateway, peer
  identification, access check, logging and metrics, everything but the work
  of the call itself (what msixd's request handling costs);
- a bare grpcio server answering Echo on a Unix socket, in its own process,
  with the same generated messages and 16 workers: the least any Python gRPC
  server on this machine needs for a call (what msixd's transport costs).

grpc.health.v1 Check, which skips msixd's own request handling, is measured
too as a reference. The calls come in ROUNDS rounds, each method's share of a
round one after the other (all clients on one method at a time), so a burst of
load on a shared machine falls on every method alike; p50 and p99 are over all
rounds, and each ratio to the bare server also per round, with its spread. The
CPU time the serving process spent per call (all its threads) is kept too: on
a loaded machine latency says as much about the neighbours as about msixd.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from tests.fixturetree import materialise

REPO = Path(__file__).resolve().parents[1]
SAMPLES = 4000
METHODS = ("Check", "Echo", "GetDevice", "ListDevices", "BareEcho")
BARE_SERVER = r"""
import sys
from concurrent import futures
import grpc
from msixd.api.msix.v1 import msix_pb2 as pb, msix_pb2_grpc

class Bare(msix_pb2_grpc.MsixServiceServicer):
    def Echo(self, request, context):
        return pb.EchoResponse(payload=request.payload)

server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
msix_pb2_grpc.add_MsixServiceServicer_to_server(Bare(), server)
server.add_insecure_port("unix:" + sys.argv[1])
server.start()
print("ready", flush=True)
server.wait_for_termination()
"""
E1000E = "0000:00:0a.0"
WARMUP = 20  # calls each client makes before it is timed


def client(socket: str, method: str, calls: int, start: float) -> list[float]:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = msix_pb2_grpc.MsixServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        call = {
            "Check": lambda: health.Check(health_pb2.HealthCheckRequest()),
            "Echo": lambda: stub.Echo(pb.EchoRequest(payload=b"msixd")),
            "GetDevice": lambda: stub.GetDevice(pb.GetDeviceRequest(bdf=E1000E)),
            "ListDevices": lambda: stub.ListDevices(pb.ListDevicesRequest()),
            "BareEcho": lambda: stub.Echo(pb.EchoRequest(payload=b"msixd")),
        }[method]
        for _ in range(WARMUP):
            call()
        while time.time() < start:  # all clients begin together
            time.sleep(0.001)
        latencies = []
        for _ in range(calls):
            began = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - began)
        return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


ROUNDS = 5


def run(concurrency: list[int], rounds: int = ROUNDS) -> list[dict[str, float | int | str]]:
    from bench.inventory import cpu_clock

    scratch = Path(tempfile.mkdtemp(prefix="msixd-rpc-"))
    root = materialise("guest-6.12", scratch)
    socket = scratch / "msixd.sock"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "msixd.main", "--socket", str(socket), "--state-dir", str(scratch / "state"),
         "--config", str(scratch / "absent.toml"), "--root", str(root), "--log-format", "json", "--log-level", "error"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    bare_socket = scratch / "bare.sock"
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_socket)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    results = []
    try:
        from tests.e2e.conftest import wait_serving

        wait_serving(socket, daemon)
        assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
        clocks = {"msixd": cpu_clock(daemon.pid), "bare": cpu_clock(bare.pid)}
        context = multiprocessing.get_context("spawn")
        for clients in concurrency:
            calls = max(SAMPLES // clients // rounds, 20)
            row: dict[str, float | int | str] = {"clients": clients, "calls_per_client": calls * rounds,
                                                  "rounds": rounds}
            latencies: dict[str, list[float]] = {m: [] for m in METHODS}
            p50s: dict[str, list[float]] = {m: [] for m in METHODS}
            walls: dict[str, float] = dict.fromkeys(METHODS, 0.0)
            server_cpu: dict[str, float] = dict.fromkeys(METHODS, 0.0)
            with context.Pool(clients) as pool:
                for n in range(rounds):
                    for method in METHODS[n % len(METHODS):] + METHODS[:n % len(METHODS)]:
                        clock = clocks["bare" if method == "BareEcho" else "msixd"]
                        target = str(bare_socket if method == "BareEcho" else socket)
                        start = time.time() + 0.5
                        spent = time.clock_gettime(clock)
                        parts = pool.starmap(client, [(target, method, calls, start)] * clients)
                        server_cpu[method] += time.clock_gettime(clock) - spent
                        batch = [x for part in parts for x in part]
                        walls[method] += max(sum(part) for part in parts)
                        latencies[method] += batch
                        p50s[method].append(statistics.median(batch))
            for method in METHODS:
                values = latencies[method]
                row[f"{method}_p50_ms"] = round(statistics.median(values) * 1e3, 3)
                row[f"{method}_p99_ms"] = round(percentile(values, 0.99) * 1e3, 3)
                row[f"{method}_per_s"] = round(len(values) / walls[method], 1)
                served = len(values) + WARMUP * clients * rounds  # the warm-up calls are served too
                row[f"{method}_server_cpu_us"] = round(server_cpu[method] / served * 1e6, 1)
            for method in ("GetDevice", "ListDevices"):
                for q in ("p50", "p99"):
                    row[f"{method}_{q}_ratio"] = round(row[f"{method}_{q}_ms"] / row[f"Echo_{q}_ms"], 2)  # type: ignore[operator]
            for method in ("Echo", "GetDevice", "ListDevices"):
                for q in ("p50", "p99"):
                    row[f"{method}_{q}_vs_bare"] = round(row[f"{method}_{q}_ms"] / row[f"BareEcho_{q}_ms"], 2)  # type: ignore[operator]
                ratios = [a / b for a, b in zip(p50s[method], p50s["BareEcho"], strict=True)]
                row[f"{method}_p50_vs_bare_rounds"] = f"{min(ratios):.2f}-{max(ratios):.2f}"
            print(row, flush=True)
            results.append(row)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        bare.terminate()
        bare.wait(timeout=30)
    return results


def footprint() -> dict[str, float]:
    """RSS idle and after a 16384-IRQ inventory, and time from start to ready."""
    import psutil

    from bench.synth import generate
    from tests.e2e.conftest import wait_serving

    scratch = Path(tempfile.mkdtemp(prefix="msixd-rss-"))
    generate(scratch / "tree", 64, 16384)
    socket = scratch / "msixd.sock"
    began = time.perf_counter()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "msixd.main", "--socket", str(socket), "--state-dir", str(scratch / "state"),
         "--config", str(scratch / "absent.toml"), "--root", str(scratch / "tree"), "--log-level", "error"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_serving(socket, daemon)
        ready = time.perf_counter() - began
        process = psutil.Process(daemon.pid)
        idle = process.memory_info().rss
        with grpc.insecure_channel(f"unix:{socket}", options=[("grpc.max_receive_message_length", 256 << 20)]) as ch:
            msix_pb2_grpc.MsixServiceStub(ch).ListDevices(pb.ListDevicesRequest(include_vectors=True))
        after = process.memory_info().rss
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
    result = {"start_to_ready_s": round(ready, 3), "rss_idle_mib": round(idle / 2**20, 1),
              "rss_after_16384_irq_inventory_mib": round(after / 2**20, 1)}
    print(result, flush=True)
    return result


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    run([1, 8, 32])
    footprint()


def profile_get_device(out: Path, calls: int = 3000) -> str:
    """Where msixd's own time in GetDevice goes (pyinstrument), on the same captured tree."""
    from pyinstrument import Profiler

    from msixd.kernel.roots import KernelRoots
    from msixd.rpc import convert
    from msixd.service.services import Services

    scratch = Path(tempfile.mkdtemp(prefix="msixd-profile-"))
    root = materialise("guest-6.12", scratch)
    services = Services.build(KernelRoots.under(root), scratch / "state.json")
    for _ in range(50):
        convert.device(services.inventory.get_device(E1000E))
    profiler = Profiler(interval=0.0001)
    profiler.start()
    for _ in range(calls):
        convert.device(services.inventory.get_device(E1000E))
    profiler.stop()
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    (out / "profile-get_device.txt").write_text(text)
    subprocess.run(["rm", "-rf", str(scratch)], check=False)
    return text


def _collapsed_summary(raw: str, top: int = 25) -> str:
    """py-spy's collapsed stacks ("frame;frame;... count" per line) as the frames with the most
    samples: on their own (self) and with what they call (inclusive)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")[1:]  # the first is the thread
        total += count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"{total} samples on CPU"]
    for title, table in (("self", own), ("inclusive", inclusive)):
        lines += ["", f"-- {title} --"]
        for frame, count in sorted(table.items(), key=lambda item: -item[1])[:top]:
            lines.append(f"{100 * count / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines) + "\n"


def profile_server(out: Path, method: str = "GetDevice", seconds: int = 8) -> str:
    """Where msixd's process spends its CPU while one client sends `method` back to back
    (py-spy, sampling every thread on CPU: the gateway's relay, gRPC, the guard, the work).
    Saved as profile-rpc-<method>.txt."""
    from tests.e2e.conftest import wait_serving

    scratch = Path(tempfile.mkdtemp(prefix="msixd-rpc-profile-"))
    root = materialise("guest-6.12", scratch)
    socket = scratch / "msixd.sock"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "msixd.main", "--socket", str(socket), "--state-dir", str(scratch / "state"),
         "--config", str(scratch / "absent.toml"), "--root", str(root), "--log-format", "json", "--log-level", "error"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_serving(socket, daemon)
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            pending = pool.apply_async(_call_for, (str(socket), method, seconds + 2.0))
            raw_path = scratch / "stacks.txt"
            spy = str(Path(sys.executable).parent / "py-spy")
            subprocess.run([spy, "record", "--pid", str(daemon.pid), "--duration", str(seconds), "--rate", "500",
                            "--format", "raw", "--output", str(raw_path), "--nonblocking"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            made = pending.get(timeout=seconds + 60)
        text = (f"msixd serving {method} of {E1000E} (captured guest-6.12 tree) to one client, back to back: "
                f"{made} calls in {seconds + 2.0:.0f} s\n\n" + _collapsed_summary(raw_path.read_text()))
        (out / f"profile-rpc-{method}.txt").write_text(text)
        return text
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def _call_for(socket: str, method: str, seconds: float) -> int:
    """Call method back to back for seconds; the number of calls made."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = msix_pb2_grpc.MsixServiceStub(channel)
        call = {
            "Echo": lambda: stub.Echo(pb.EchoRequest(payload=b"msixd")),
            "GetDevice": lambda: stub.GetDevice(pb.GetDeviceRequest(bdf=E1000E)),
        }[method]
        made = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            call()
            made += 1
        return made
