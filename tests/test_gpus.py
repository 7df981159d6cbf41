"""GPUs: placing local nodes on them, each worker's own CUDA_VISIBLE_DEVICES, their facts in the sidecar's
/status and /metrics, and the worker's CPU fallback, all on a machine without GPUs.

The assignment and the launch flags run on fake device lists; NVML is faked for the facts. Then the real
thing: a worker given a GPU CUDA cannot see under ``--device cuda`` exits 87 with one line, and a whole
``launch.py --gpus 0,1`` cluster whose workers carry CUDA_VISIBLE_DEVICES 0 and 1, run on CPU and say why.
"""

from __future__ import annotations

import logging
import queue
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pynvml
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic_settings import CliApp
from starlette.testclient import TestClient

import balancer.config.gpus as gpus
from balancer.api.basic_auth import BasicAuth
from balancer.api.gpu_xid import XidWatcher
from balancer.api.metrics import SidecarMetrics
from balancer.api.routes import status_app
from balancer.api.status import status_document
from balancer.config.basics import ClusterConfigError
from balancer.config.gpus import Gpu, GpuAssignmentError, assign_gpus
from balancer.config.loading import parse_cluster
from balancer.config.settings import LaunchSettings
from balancer.sidecar import Sidecar
from balancer.supervision.state import PartStatus
from bench.harness.processes import REPO, Processes, free_port
from bench.harness.waiting import wait_until
from tests.balancer_helpers import STATS_PASSWORD, cluster_data
from webui.contract import EXIT_LOAD_FAILED
from webui.settings import WorkerSettings
from webui.worker.pipelines.device import DeviceError, Machine, plan_device

FACTS = {
    "0": {"name": "Fake L4", "uuid": "GPU-0", "memory_used_bytes": 2**30, "memory_total_bytes": 24 * 2**30,
          "utilization_percent": 97, "temperature_celsius": 61},
    "1": {"name": "Fake L4", "uuid": "GPU-1", "memory_used_bytes": 0, "memory_total_bytes": 24 * 2**30},
}
"""What gpu_facts() returns on a two-GPU box whose second GPU reports no utilisation or temperature."""
GPU_SERIES = "portrait_gpu_"


# --- the assignment rule ----------------------------------------------------------------------


def test_every_gpu_gets_one_node_by_default() -> None:
    assert assign_gpus([0, 1, 2, 3], None) == [0, 1, 2, 3]
    assert assign_gpus([1, 3], None) == [1, 3]


def test_without_gpus_two_cpu_nodes_as_before() -> None:
    assert assign_gpus([], None) == [None, None]
    assert assign_gpus([], 3, workers_per_gpu=2) == [None, None, None]  # nothing to share


def test_several_workers_per_gpu_only_when_asked_and_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="balancer.config.gpus"):
        assert assign_gpus([0, 1], None, workers_per_gpu=2) == [0, 1, 0, 1]
    assert "2 workers per GPU on GPU(s) 0,1" in caplog.text and "memory" in caplog.text


def test_fewer_nodes_than_slots_spread_over_the_gpus(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="balancer.config.gpus"):
        assert assign_gpus([0, 1], 2, workers_per_gpu=2) == [0, 1]
    assert not caplog.records  # nobody shares: no warning
    assert assign_gpus([0, 1, 2, 3], 0) == []


def test_more_nodes_than_gpu_slots_is_a_clear_error() -> None:
    with pytest.raises(GpuAssignmentError, match=r"--nodes 6 needs 6 GPU slots but there are 4 .*--workers-per-gpu 2"):
        assign_gpus([0, 1, 2, 3], 6)
    with pytest.raises(GpuAssignmentError, match="at least 1"):
        assign_gpus([0], None, workers_per_gpu=0)


# --- launch.py's flags on a fake GPU list -----------------------------------------------------


def launch_spec(monkeypatch: pytest.MonkeyPatch, seen: list[int], *flags: str):
    """The cluster ``launch.py FLAGS`` would run on a machine whose NVML sees GPUs ``seen``."""
    fake = [Gpu(index=i, name="Fake L4", uuid=f"GPU-{i}", memory_total_bytes=24 * 2**30) for i in seen]
    monkeypatch.setattr("balancer.config.settings.list_gpus", lambda: fake)
    return CliApp.run(LaunchSettings, cli_args=["--threads", "1", *flags]).cluster_spec()


def placement(spec) -> list[tuple[str, int | None]]:
    return [(node.name, node.worker.gpu) for node in spec.nodes]


def device_flag(spec) -> set[str | None]:
    """The ``--device`` the local workers get (None: not given, 'auto')."""
    args = [node.worker.args for node in spec.nodes]
    return {a[a.index("--device") + 1] if "--device" in a else None for a in args}


def test_launch_auto_puts_one_node_on_each_of_four_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = launch_spec(monkeypatch, [0, 1, 2, 3])
    assert placement(spec) == [("node1", 0), ("node2", 1), ("node3", 2), ("node4", 3)]
    assert device_flag(spec) == {"cuda"}  # NVML saw them: CUDA not seeing one is a load failure
    assert [node.worker.port - spec.nodes[0].worker.port for node in spec.nodes] == [0, 1, 2, 3]


def test_launch_gpu_list_and_workers_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert placement(launch_spec(monkeypatch, [0, 1, 2, 3], "--gpus", "1,3")) == [("node1", 1), ("node2", 3)]
    spec = launch_spec(monkeypatch, [0, 1, 2, 3], "--gpus", "1, 3", "--workers-per-gpu", "2")
    assert placement(spec) == [("node1", 1), ("node2", 3), ("node3", 1), ("node4", 3)]
    with pytest.raises(ClusterConfigError, match=r"--gpus: no GPU 5 on this machine \(NVML sees 0,1,2,3\)"):
        launch_spec(monkeypatch, [0, 1, 2, 3], "--gpus", "1,5")
    with pytest.raises(ClusterConfigError, match="--nodes 5 needs 5 GPU slots"):
        launch_spec(monkeypatch, [0, 1, 2, 3], "--nodes", "5")


def test_launch_without_gpus_keeps_two_cpu_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = launch_spec(monkeypatch, [])
    assert placement(spec) == [("node1", None), ("node2", None)] and device_flag(spec) == {None}
    spec = launch_spec(monkeypatch, [0, 1], "--gpus", "none")
    assert placement(spec) == [("node1", None), ("node2", None)] and device_flag(spec) == {"cpu"}
    assert len(launch_spec(monkeypatch, [], "--nodes", "3").nodes) == 3


def test_launch_gpu_list_on_a_machine_without_gpus_is_taken_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = launch_spec(monkeypatch, [], "--gpus", "0,1")
    assert placement(spec) == [("node1", 0), ("node2", 1)]
    assert device_flag(spec) == {None}  # 'auto': the workers fall back to CPU, saying so


def test_launch_gpu_flag_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("x", "0,0", "-1", "0,,1"):
        with pytest.raises(ValueError, match="gpus"):
            launch_spec(monkeypatch, [0, 1], f"--gpus={bad}")


def test_launch_exits_2_in_one_line_on_a_bad_gpu_flag(tmp_path: Path) -> None:
    cases = ((["--gpus", "zero"], "error: gpus: "), (["--gpus", "0,1", "--nodes", "3"], "error: --nodes 3"))
    for flags, message in cases:
        result = subprocess.run([sys.executable, "launch.py", *flags, "--run-dir", str(tmp_path / "run")], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr


def test_a_cluster_file_pins_a_worker_to_a_gpu_and_no_web_front(tmp_path: Path) -> None:
    data = cluster_data(tmp_path, [], [], nodes=[{"name": "a", "worker": {"port": free_port(), "gpu": 2}}])
    assert parse_cluster(data).nodes[0].worker.gpu == 2
    data["nodes"][0]["web"] = {"port": free_port(), "gpu": 0}
    with pytest.raises(ClusterConfigError, match="gpu is a worker setting"):
        parse_cluster(data)


# --- the sidecar: each worker's environment, the facts in /status and /metrics ----------------


def test_the_sidecar_gives_each_worker_its_gpu_unless_its_env_says_otherwise(tmp_path: Path) -> None:
    nodes = [
        {"name": "a", "web": {"port": free_port()}, "worker": {"port": free_port(), "gpu": 0}},
        {"name": "b", "worker": {"port": free_port(), "gpu": 1, "env": {"CUDA_VISIBLE_DEVICES": "GPU-1234"}}},
        {"name": "c", "worker": {"port": free_port()}},
    ]
    sidecar = Sidecar(parse_cluster(cluster_data(tmp_path, [], [], nodes=nodes)), None, base_env={"PATH": "/bin"})
    env = {supervisor.status.node + "/" + supervisor.status.part: supervisor.child.env
           for supervisor in sidecar.nodes.supervisors}
    assert env["a/worker"]["CUDA_VISIBLE_DEVICES"] == "0" and env["a/worker"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["b/worker"]["CUDA_VISIBLE_DEVICES"] == "GPU-1234"  # the part's own env wins
    assert "CUDA_VISIBLE_DEVICES" not in env["a/web"] and "CUDA_VISIBLE_DEVICES" not in env["c/worker"]
    assert [status.gpu for status in sidecar.nodes.statuses()] == ["0", None, "GPU-1234", None]


def parts_on_gpus() -> list[PartStatus]:
    """node1's worker on GPU 0, node2's on GPU 1, node1's web front."""
    return [
        PartStatus("node1", "worker", "workers", "http://w1", gpu="0"),
        PartStatus("node2", "worker", "workers", "http://w2", gpu="1"),
        PartStatus("node1", "web", "webs", "http://f1"),
    ]


def test_status_has_gpus_with_their_workers_only_when_there_are_gpus() -> None:
    document = status_document(parts_on_gpus(), 0.0, gpus=FACTS)
    assert document["gpus"]["0"] == {**FACTS["0"], "workers": ["node1"]}
    assert "temperature_celsius" not in document["gpus"]["1"]  # not reported: absent, not 0
    assert document["nodes"]["node2"]["worker"]["gpu"] == "1" and "gpu" not in document["nodes"]["node1"]["web"]
    assert "gpus" not in status_document(parts_on_gpus(), 0.0, gpus={})


def gpu_samples(text: str) -> dict[tuple[str, str], float]:
    """(metric, gpu label) -> value of every ``portrait_gpu_*`` sample in an exposition text."""
    return {(sample.name, sample.labels["gpu"]): sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name.startswith(GPU_SERIES)}


def test_metrics_have_gpu_gauges_only_for_what_the_gpus_report() -> None:
    metrics = SidecarMetrics()
    assert gpu_samples(metrics.render(parts_on_gpus(), 0.0, FACTS).decode()) == {
        ("portrait_gpu_memory_used_bytes", "0"): 2**30, ("portrait_gpu_memory_used_bytes", "1"): 0,
        ("portrait_gpu_memory_total_bytes", "0"): 24 * 2**30, ("portrait_gpu_memory_total_bytes", "1"): 24 * 2**30,
        ("portrait_gpu_utilization_percent", "0"): 97, ("portrait_gpu_temperature_celsius", "0"): 61,
    }  # GPU 1 reports no utilisation or temperature: no series, not 0
    assert GPU_SERIES not in metrics.render(parts_on_gpus(), 0.0, {}).decode()  # not even HELP lines


def test_status_app_reads_the_gpu_facts_off_the_loop(no_nvml: None) -> None:
    def facts() -> dict:
        return FACTS

    auth = BasicAuth("admin", STATS_PASSWORD)
    app = status_app(parts_on_gpus, SidecarMetrics(), lambda node, part: None, auth, gpus=facts)
    with TestClient(app) as client:
        assert client.get("/status").json()["gpus"]["1"]["workers"] == ["node2"]
        assert gpu_samples(client.get("/metrics").text)[("portrait_gpu_utilization_percent", "0")] == 97
    app = status_app(parts_on_gpus, SidecarMetrics(), lambda node, part: None, auth)  # gpu_facts, without NVML
    with TestClient(app) as client:
        assert "gpus" not in client.get("/status").json() and GPU_SERIES not in client.get("/metrics").text


# --- NVML ---------------------------------------------------------------------------------------


class FakeNVML:
    """NVML on a two-GPU box whose second GPU has no temperature sensor."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "Fake L4"

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(used=handle * 2**30, total=24 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=50 + handle)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        if handle == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 60


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML as on a machine without NVIDIA's driver, whatever this machine has."""
    def missing() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(gpus.pynvml, "nvmlInit", missing)
    monkeypatch.setattr(gpus, "_nvml_state", None)


def test_nvml_lists_gpus_and_their_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "pynvml", FakeNVML())
    monkeypatch.setattr(gpus, "_nvml_state", None)
    assert gpus.list_gpus() == [Gpu(0, "Fake L4", "GPU-0", 24 * 2**30), Gpu(1, "Fake L4", "GPU-1", 24 * 2**30)]
    facts = gpus.gpu_facts()
    assert facts["0"] == {"name": "Fake L4", "uuid": "GPU-0", "memory_used_bytes": 0,
                          "memory_total_bytes": 24 * 2**30, "utilization_percent": 50, "temperature_celsius": 60}
    assert "temperature_celsius" not in facts["1"] and facts["1"]["utilization_percent"] == 51


def test_without_nvidias_driver_nothing_and_one_info_line(no_nvml: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="balancer.config.gpus"):
        assert gpus.list_gpus() == [] and gpus.gpu_facts() == {} and gpus.gpu_facts() == {}
    assert [record.levelno for record in caplog.records] == [logging.INFO]
    assert "no NVIDIA GPU found (NVML: NVML Shared Library Not Found)" in caplog.text


class FakeXidNVML(FakeNVML):
    """The same box with NVML's event API: GPU 1 refuses XID events; ``deliver`` hands GPU 0's to the waiter."""

    nvmlEventTypeXidCriticalError = pynvml.nvmlEventTypeXidCriticalError

    def __init__(self) -> None:
        self.events: queue.Queue[SimpleNamespace] = queue.Queue()
        self.registered: list[int] = []
        self.freed = False

    def deliver(self, gpu: int, xid: int) -> None:
        self.events.put(SimpleNamespace(device=gpu, eventType=self.nvmlEventTypeXidCriticalError, eventData=xid))

    def nvmlEventSetCreate(self) -> str:
        return "event set"

    def nvmlDeviceRegisterEvents(self, handle: int, types: int, event_set: str) -> None:
        if handle == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        assert (types, event_set) == (self.nvmlEventTypeXidCriticalError, "event set")
        self.registered.append(handle)

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> SimpleNamespace:
        try:
            return self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT) from None

    def nvmlEventSetFree(self, event_set: str) -> None:
        self.freed = True

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        return handle


def xid_samples(metrics: SidecarMetrics) -> dict[tuple[str, str], float]:
    return {key: value for key, value in gpu_samples(metrics.render(parts_on_gpus(), 0.0, {}).decode()).items()
            if "xid" in key[0]}


def test_xid_events_count_per_gpu_and_keep_the_last_code(caplog: pytest.LogCaptureFixture) -> None:
    nvml, metrics = FakeXidNVML(), SidecarMetrics()
    watcher = XidWatcher(nvml, wait_ms=50)
    metrics.registry.register(watcher)
    with caplog.at_level(logging.INFO, logger="balancer.api.gpu_xid"):
        assert watcher.start()
    assert nvml.registered == [0] and "watching XID errors on GPU(s) 0 (NVML: GPU 1: Not Supported)" in caplog.text
    assert xid_samples(metrics) == {("portrait_gpu_xid_errors_total", "0"): 0}  # from 0, so increase() sees the 1st
    try:
        nvml.deliver(0, 79)
        nvml.deliver(0, 48)
        wait_until(lambda: watcher.errors["0"] == 2, "two XID errors counted")
        assert xid_samples(metrics) == {("portrait_gpu_xid_errors_total", "0"): 2, ("portrait_gpu_last_xid", "0"): 48}
        assert "GPU 0: XID error 79" in caplog.text
    finally:
        watcher.stop()
    assert not watcher._thread.is_alive() and nvml.freed


def test_no_xid_series_without_the_event_api_or_nvidias_driver(
        no_nvml: None, caplog: pytest.LogCaptureFixture) -> None:
    for nvml in (FakeNVML(), pynvml):  # a binding without the event API; no driver (no_nvml)
        metrics, watcher = SidecarMetrics(), XidWatcher(nvml)
        metrics.registry.register(watcher)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="balancer.api.gpu_xid"):
            assert not watcher.start()
        assert [record.levelno for record in caplog.records] == [logging.INFO], caplog.text
        assert "GPU XID errors not watched" in caplog.text and "xid" not in metrics.render([], 0.0).decode()
        watcher.stop()  # no thread: nothing to wait for


# --- the worker: CPU fallback, or exit 87 when CUDA was required --------------------------------


def test_a_worker_given_a_gpu_cuda_cannot_see_runs_on_cpu_and_says_why() -> None:
    machine = Machine(cuda=False, visible_devices="0", torch_cuda=None)
    plan = plan_device(WorkerSettings(), machine).as_dict()
    assert (plan["device"], plan["gpu_requested"]) == ("cpu", "0")
    assert "CUDA_VISIBLE_DEVICES=0" in plan["fallback_reason"] and plan["fallback_reason"].endswith("running on CPU")
    with pytest.raises(DeviceError, match=r"'cuda' was requested but CUDA cannot see .*CUDA_VISIBLE_DEVICES=0"):
        plan_device(WorkerSettings(device="cuda"), machine)
    for hidden in (None, "", "-1"):  # no GPU given: nothing to fall back from
        plan = plan_device(WorkerSettings(), Machine(cuda=False, visible_devices=hidden))
        assert (plan.gpu_requested, plan.fallback_reason) == (None, None)
    on_gpu = plan_device(WorkerSettings(), Machine(cuda=True, gpu_memory_bytes=24 * 2**30, visible_devices="1"))
    assert (on_gpu.device, on_gpu.gpu_requested, on_gpu.fallback_reason) == ("cuda", "1", None)


def test_a_worker_that_must_use_a_gpu_cuda_cannot_see_exits_87_in_one_line(processes: Processes) -> None:
    proc = processes.start(["python", "-m", "webui.worker", "--device", "cuda", "--port", str(free_port())],
                           env={"CUDA_VISIBLE_DEVICES": "0"}, log_name="worker-no-cuda")
    assert proc.wait(timeout=90) == EXIT_LOAD_FAILED
    log = proc.log_path.read_text()
    assert "Traceback" not in log
    problems = [line for line in log.splitlines() if " CRITICAL " in line or " ERROR " in line]
    assert len(problems) == 1, log
    assert "'cuda' was requested" in problems[0] and "CUDA_VISIBLE_DEVICES=0" in problems[0], log


# --- a real cluster: launch.py --gpus 0,1 on this CPU machine -----------------------------------


@pytest.mark.skipif(bool(gpus.list_gpus()), reason="a machine without NVIDIA GPUs: workers must fall back to CPU")
def test_launch_gpus_0_1_on_cpu_gives_each_worker_its_device_and_they_fall_back(
        demo_model_dir: Path, tmp_path: Path) -> None:
    data = cluster_data(tmp_path / "run", [], [], sidecar={"port": free_port(), "probe_interval": 0.5})
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(data))
    spec = parse_cluster(data)
    first_web = consecutive_free_ports(4)
    first_worker = first_web + 2
    sidecar = spec.sidecar.url
    with Processes("gpus") as processes:
        launch = processes.start(["python", "launch.py", "--cluster", str(cluster_file), "--gpus", "0,1",
                                  "--first-web-port", str(first_web), "--first-worker-port", str(first_worker),
                                  "--threads", "1"], log_name="gpus-launch")

        def workers_ready() -> dict | None:
            assert launch.poll() is None, f"launch.py exited with {launch.returncode}; see {launch.log_path}"
            try:
                status = httpx.get(f"{sidecar}/status", timeout=5).json()
            except httpx.HTTPError:
                return None
            ready = all(status["nodes"][n]["worker"]["state"] == "ready" for n in ("node1", "node2"))
            return status if ready else None

        status = wait_until(workers_ready, "both workers ready", timeout=100, interval=0.5)
        for index, node in enumerate(("node1", "node2")):
            worker = status["nodes"][node]["worker"]
            assert worker["gpu"] == str(index)
            environ = psutil.Process(worker["pid"]).environ()
            assert (environ["CUDA_VISIBLE_DEVICES"], environ["CUDA_DEVICE_ORDER"]) == (str(index), "PCI_BUS_ID")
            assert "CUDA_VISIBLE_DEVICES" not in psutil.Process(status["nodes"][node]["web"]["pid"]).environ()
            pipeline = httpx.get(f"http://127.0.0.1:{first_worker + index}/readyz", timeout=10).json()["pipeline"]
            assert (pipeline["device"], pipeline["gpu_requested"]) == ("cpu", str(index))
            assert f"CUDA_VISIBLE_DEVICES={index}" in pipeline["fallback_reason"]
        assert "gpus" not in status  # no GPU here: no GPU facts, not zeros
        assert GPU_SERIES not in httpx.get(f"{sidecar}/metrics", timeout=5).text


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 right now (launch.py counts node ports up)."""
    for _ in range(100):
        first = free_port()
        if all(port_is_free(first + offset) for offset in range(1, count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 right now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
