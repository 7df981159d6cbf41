"""Nodes accept only their balancers: mutual TLS between HAProxy and remote nodes, on loopback.

``python -m balancer.multihost.certs`` makes the CAs and the certificates (its output is checked: the chains
verify, the SANs and key usages are what each role needs, the queue certificates chain to the
queue CA only, the files are 0600, nothing is overwritten). Then a real HAProxy, rendered from a
cluster file with ``tls``, fronts a real worker (serving the fixed-latency stand-in: the subject is the
transport, not the pixels) and a real web front that both require client
certificates, the web front sending its jobs to a TLS worker queue with its queue certificate: a
REST job and a ``gradio_client`` job succeed through the public port, while a client without a
certificate, with one from another CA, with a node's own certificate or with a queue certificate
is refused by the node, the worker queue refuses every client but a queue certificate, and a node
whose certificate names another host stays DOWN.
"""

from __future__ import annotations

import ipaddress
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from gradio_client import Client

from balancer.config.basics import ClusterConfigError
from balancer.config.loading import parse_cluster
from balancer.haproxy.config import WEBS_BACKEND, WORKERS_BACKEND, config_path_arg, render_config
from balancer.haproxy.process import RuntimeAPI, find_haproxy, validate_config, write_config
from bench.harness.balancer import running_haproxy, wait_servers_up
from bench.harness.processes import Processes, free_port
from bench.harness.waiting import wait_http
from tests.balancer_helpers import assert_refused, client_context, cluster_data
from tests.helpers import node_server_lines

NODE_HOST = "gpu1"
BALANCER = "lb1"


def make_certs(out: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the documented certificate command."""
    return subprocess.run([sys.executable, "-m", "balancer.multihost.certs", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=60)


def load_cert(path: Path) -> x509.Certificate:
    """The first certificate in a PEM file."""
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cluster's CA, a balancer and a node host (127.0.0.1 and localhost among its SANs)."""
    out = tmp_path_factory.mktemp("certs") / "cluster"
    result = make_certs(out, "--balancer", BALANCER, "--node", f"{NODE_HOST}=127.0.0.1,localhost")
    assert result.returncode == 0, result.stderr
    return out


# --- the certificate command ------------------------------------------------------------------


def test_certs_chain_to_the_ca_with_the_sans_and_usages_of_their_role(certs: Path) -> None:
    expected = {"ca.crt", "ca.key", f"{BALANCER}.pem", f"{NODE_HOST}.pem",
                "queue-ca.crt", "queue-ca.key", f"{BALANCER}-queue.pem", f"{NODE_HOST}-queue.pem"}
    assert {path.name for path in certs.iterdir()} == expected
    for path in certs.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    store = Store([load_cert(certs / "ca.crt")])
    node, balancer = load_cert(certs / f"{NODE_HOST}.pem"), load_cert(certs / f"{BALANCER}.pem")

    # The node serves under its name and its addresses; its key cannot act as a client.
    for name in (x509.DNSName(NODE_HOST), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        PolicyBuilder().store(store).build_server_verifier(name).verify(node, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_client_verifier().verify(node, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("elsewhere")).verify(node, [])
    assert node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH])

    # The balancer is a client (of the nodes) and a server (the worker queue).
    verified = PolicyBuilder().store(store).build_client_verifier().verify(balancer, [])
    assert x509.DNSName(BALANCER) in verified.subjects
    PolicyBuilder().store(store).build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(
        balancer, [])
    # Each PEM holds the key of its certificate (what HAProxy's crt and uvicorn load).
    client_context(certs / "ca.crt", certs / f"{BALANCER}.pem")


def test_queue_certificates_are_clients_of_the_queue_ca_only(certs: Path) -> None:
    cluster, queue = Store([load_cert(certs / "ca.crt")]), Store([load_cert(certs / "queue-ca.crt")])
    assert load_cert(certs / "queue-ca.crt") != load_cert(certs / "ca.crt")
    for host in (BALANCER, NODE_HOST):
        cert = load_cert(certs / f"{host}-queue.pem")
        # What the worker queue checks (HAProxy: ca-file queue-ca.crt verify required): a client of the queue CA.
        verified = PolicyBuilder().store(queue).build_client_verifier().verify(cert, [])
        assert x509.DNSName(f"{host}-queue") in verified.subjects
        assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH])
        # What a node checks (the cluster CA): a queue certificate is nobody there, and it serves nothing.
        with pytest.raises(VerificationError):
            PolicyBuilder().store(cluster).build_client_verifier().verify(cert, [])
        with pytest.raises(VerificationError):
            PolicyBuilder().store(queue).build_server_verifier(x509.DNSName(f"{host}-queue")).verify(cert, [])
        # ... and a cluster certificate is nobody at the worker queue.
        with pytest.raises(VerificationError):
            PolicyBuilder().store(queue).build_client_verifier().verify(load_cert(certs / f"{host}.pem"), [])
        client_context(certs / "ca.crt", certs / f"{host}-queue.pem")  # its key is in the file


def test_a_directory_made_before_the_queue_ca_gets_one(certs: Path, tmp_path: Path) -> None:
    out = tmp_path / "old"
    assert make_certs(out, "--node", NODE_HOST).returncode == 0
    for name in ("queue-ca.crt", "queue-ca.key", f"{NODE_HOST}-queue.pem"):
        (out / name).unlink()
    ca = (out / "ca.crt").read_bytes()
    result = make_certs(out, "--node", "gpu9")
    assert result.returncode == 0, result.stderr
    assert (out / "ca.crt").read_bytes() == ca  # the cluster CA is kept, the queue CA made
    assert {path.name for path in out.iterdir()} == {"ca.crt", "ca.key", f"{NODE_HOST}.pem", "queue-ca.crt",
                                                     "queue-ca.key", "gpu9.pem", "gpu9-queue.pem"}
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in out.iterdir())


def test_certs_refuse_to_overwrite_and_reuse_the_ca(certs: Path) -> None:
    before = (certs / f"{NODE_HOST}.pem").read_bytes()
    result = make_certs(certs, "--node", NODE_HOST)
    assert result.returncode == 2
    assert "would overwrite" in result.stderr and "--force" in result.stderr
    assert "Traceback" not in result.stderr
    assert (certs / f"{NODE_HOST}.pem").read_bytes() == before

    # A host added later is signed by the same CAs.
    ca, queue_ca = (certs / "ca.crt").read_bytes(), (certs / "queue-ca.crt").read_bytes()
    assert make_certs(certs, "--node", "gpu9").returncode == 0
    assert (certs / "ca.crt").read_bytes() == ca and (certs / "queue-ca.crt").read_bytes() == queue_ca
    PolicyBuilder().store(Store([load_cert(certs / "ca.crt")])).build_server_verifier(
        x509.DNSName("gpu9")).verify(load_cert(certs / "gpu9.pem"), [])
    PolicyBuilder().store(Store([load_cert(certs / "queue-ca.crt")])).build_client_verifier().verify(
        load_cert(certs / "gpu9-queue.pem"), [])
    (certs / "gpu9.pem").unlink()
    (certs / "gpu9-queue.pem").unlink()


@pytest.mark.parametrize("args, message", [
    ([], "nothing to issue"),
    (["--node", "bad name"], "NAME must be a host name"),
    (["--node", "gpu1=not a name"], "neither an IP address nor a DNS name"),
    (["--node", "gpu1", "--balancer", "gpu1"], "names given twice"),
    (["--node", "gpu1", "--node", "gpu1-queue"], "the name of another host's queue certificate"),
])
def test_certs_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = make_certs(tmp_path / "out", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_nodes_refuse_half_a_tls_setting(certs: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "webui.worker", "--tls-cert", str(certs / f"{NODE_HOST}.pem")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--tls-cert and --tls-ca go together" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("queue, cert, message", [
    ("https://10.0.0.1:8081", "missing.pem", "worker_queue_cert: Value error, not a file"),
    ("http://127.0.0.1:8081", f"{NODE_HOST}-queue.pem", "--worker-queue-cert is presented over TLS only"),
])
def test_web_fronts_refuse_a_bad_queue_certificate_setting(certs: Path, queue: str, cert: str, message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "webui.web", "--worker-queue", queue,
                             "--worker-queue-cert", str(certs / cert)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


# --- HAProxy and real nodes over mutual TLS ---------------------------------------------------


def test_haproxy_is_built_with_openssl() -> None:
    output = subprocess.run([find_haproxy(), "-vv"], capture_output=True, text=True, timeout=30).stdout
    assert "+OPENSSL" in output and "Running on OpenSSL version" in output


@pytest.fixture(scope="module")
def mtls_cluster(certs: Path, tmp_path_factory: pytest.TempPathFactory):
    """HAProxy (client certificate lb1) in front of a TLS worker and a TLS web front of host gpu1.

    A second server, "impostor", points at the same worker but expects a certificate naming
    another host. Yields (spec, worker URL, web URL)."""
    run_dir = tmp_path_factory.mktemp("mtls")
    # HAProxy's connect timeout covers the TLS handshake, which needs the node's event loop: on the
    # loaded 2-core test machine a busy web front took over the 2 s default, and one failed connect
    # marks a server down (observe layer4).
    data = cluster_data(run_dir, [NODE_HOST], [NODE_HOST], limits={"connect_timeout": 10})
    data["nodes"][0]["cert_name"] = NODE_HOST
    worker_port = data["nodes"][0]["worker"]["port"]
    data["nodes"].append({"name": "impostor", "managed": False, "cert_name": "gpu2",
                          "worker": {"port": worker_port}})
    data["tls"] = {"ca_file": str(certs / "ca.crt"), "cert_file": str(certs / f"{BALANCER}.pem"),
                   "worker_queue": True}
    spec = parse_cluster(data)
    node = spec.nodes[0]
    tls_args = ["--tls-cert", str(certs / f"{NODE_HOST}.pem"), "--tls-ca", str(certs / "ca.crt")]
    with Processes("mtls") as processes:
        worker = processes.start(["python", "-m", "webui.worker", "--port", str(worker_port), "--node", "gpu1-worker",
                                  "--model", "standin:0.3", *tls_args], log_name="mtls-worker")
        web = processes.start(["python", "-m", "webui.web", "--port", str(node.web.port), "--node", "gpu1-web",
                               "--worker-queue", spec.worker_queue_url, "--worker-queue-ca", str(certs / "ca.crt"),
                               "--worker-queue-cert", str(certs / f"{NODE_HOST}-queue.pem"), *tls_args],
                              log_name="mtls-web")
        with running_haproxy(spec, validate=True):
            wait_servers_up(spec, [(WEBS_BACKEND, NODE_HOST), (WORKERS_BACKEND, NODE_HOST)], timeout=240,
                            alive=lambda: worker.poll() is None and web.poll() is None)
            wait_http(f"{spec.public.url}/readyz", timeout=30)
            yield spec, f"https://127.0.0.1:{worker_port}", f"https://127.0.0.1:{node.web.port}"


def test_jobs_succeed_through_the_public_port_over_mutual_tls(mtls_cluster, tmp_path: Path) -> None:
    spec, _, _ = mtls_cluster
    job = {"prompt": "tls portrait", "width": 128, "height": 128, "steps": 2, "seed": 11}
    rest = httpx.post(f"{spec.public.url}/generate", json=job, timeout=300)
    assert rest.status_code == 200, rest.text
    assert rest.json()["worker_id"] == "gpu1-worker" and len(rest.json()["images"]) == 1

    # The page's path: HAProxy -> web front (TLS) -> worker queue (TLS) -> HAProxy -> worker (TLS).
    client = Client(spec.public.url, verbose=False, download_files=str(tmp_path))
    gallery, info = client.predict(prompt="tls portrait", width=128, height=128, steps=2, seed=11,
                                   api_name="/generate")
    assert info["worker_id"] == "gpu1-worker" and info["seed"] == 11
    assert Path(gallery[0]["image"]).stat().st_size > 0


def test_the_page_links_to_the_public_scheme_not_the_nodes(mtls_cluster) -> None:
    spec, _, web_url = mtls_cluster
    # Gradio builds its file and API links from this root: the public site is plain HTTP here.
    assert httpx.get(f"{spec.public.url}/config", timeout=30).json()["root"] == spec.public.url


def test_a_node_certificate_naming_another_host_is_refused(mtls_cluster) -> None:
    spec, _, _ = mtls_cluster
    api = RuntimeAPI(spec.socket_path)
    assert api.server(WORKERS_BACKEND, NODE_HOST).is_up
    assert api.server(WORKERS_BACKEND, "impostor").status.startswith("DOWN")


@pytest.mark.parametrize("part", ["worker", "web"])
def test_nodes_accept_only_clients_with_a_balancer_certificate(mtls_cluster, certs: Path,
                                                               tmp_path: Path, part: str) -> None:
    spec, worker_url, web_url = mtls_cluster
    url = f"{worker_url if part == 'worker' else web_url}/healthz"
    ca = certs / "ca.crt"
    # The control: the balancer's certificate gets in, so the refusals below are about certificates.
    assert httpx.get(url, verify=client_context(ca, certs / f"{BALANCER}.pem"), timeout=10).status_code == 200

    assert make_certs(tmp_path / "other", "--balancer", BALANCER).returncode == 0
    refused = {
        "no certificate": client_context(ca),
        "a balancer certificate from another CA": client_context(ca, tmp_path / "other" / f"{BALANCER}.pem"),
        "a node's own certificate": client_context(ca, certs / f"{NODE_HOST}.pem"),
        "a web front's queue certificate": client_context(ca, certs / f"{NODE_HOST}-queue.pem"),
    }
    assert_refused(url, refused, part)
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://"), timeout=10)  # plain HTTP is not served either


def test_the_worker_queue_is_served_over_tls_to_web_fronts_only(mtls_cluster, certs: Path) -> None:
    spec, _, _ = mtls_cluster
    url = f"{spec.worker_queue_url}/readyz"
    ca = certs / "ca.crt"
    assert url.startswith("https://")
    # The control: a web front's queue certificate gets in (the jobs above came this way too).
    assert httpx.get(url, verify=client_context(ca, certs / f"{NODE_HOST}-queue.pem"), timeout=10).status_code == 200
    refused = {
        "no certificate": client_context(ca),
        "the balancer's certificate": client_context(ca, certs / f"{BALANCER}.pem"),
        "a node's certificate": client_context(ca, certs / f"{NODE_HOST}.pem"),
    }
    assert_refused(url, refused, "the worker queue")
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=10)  # the system's CAs do not know the cluster's


def test_managed_web_fronts_get_the_tls_worker_queue(certs: Path, tmp_path: Path) -> None:
    from balancer.operations.parts import part_command

    data = cluster_data(tmp_path, [], [], tls={"ca_file": str(certs / "ca.crt"),
                                               "cert_file": str(certs / f"{BALANCER}.pem")})
    data["worker_queue"]["host"] = "0.0.0.0"
    data["nodes"] = [{"name": "local", "web": {"port": free_port()}}]
    spec = parse_cluster(data)
    command = part_command(spec, spec.nodes[0], "web", spec.nodes[0].web)
    assert command[command.index("--worker-queue") + 1] == spec.worker_queue_url
    assert spec.worker_queue_url.startswith("https://127.0.0.1:")
    assert command[command.index("--worker-queue-ca") + 1] == str(certs / "ca.crt")
    # The balancer's own web fronts present its queue certificate (lb1-queue.pem beside lb1.pem).
    assert command[command.index("--worker-queue-cert") + 1] == str(certs / f"{BALANCER}-queue.pem")
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    bind = next(line for line in text.splitlines() if line.startswith(f"    bind 0.0.0.0:{spec.worker_queue.port}"))
    assert bind.endswith(f" ssl crt {config_path_arg(certs / f'{BALANCER}.pem')} "
                         f"ca-file {config_path_arg(certs / 'queue-ca.crt')} verify required"), bind
    assert "verifyhost" not in text  # the managed node itself stays plain
    spec.check_own_certificate(None)  # lb1.pem, queue-ca.crt and lb1-queue.pem are where the defaults say


def test_the_gpu_host_compose_file_serves_every_node_over_mutual_tls() -> None:
    from bench.harness.processes import REPO
    from webui.settings import WebSettings, WorkerSettings

    compose = yaml.safe_load((REPO / "docker" / "compose.gpu-host.yaml").read_text())
    kinds = {"webui.worker": WorkerSettings, "webui.web": WebSettings}
    for name, service in compose["services"].items():
        settings = kinds[service["command"][2]]
        env = service["environment"]
        unknown = [key for key in env if key.removeprefix("PORTRAIT_").lower() not in settings.model_fields]
        assert not unknown, f"{name}: {unknown} are not settings of {settings.__name__} (ignored silently)"
        assert env["PORTRAIT_TLS_CERT"].startswith("/certs/") and env["PORTRAIT_TLS_CA"] == "/certs/ca.crt"
        if settings is WebSettings:
            assert env["PORTRAIT_WORKER_QUEUE"].startswith("https://")
            assert env["PORTRAIT_WORKER_QUEUE_CA"] == "/certs/ca.crt"
            assert env["PORTRAIT_WORKER_QUEUE_CERT"] == "/certs/${NODE_HOST}-queue.pem"


def test_bench_report_gives_what_mutual_tls_adds_and_the_load() -> None:
    from bench.tls import parse_args, render

    args = parse_args(["--requests", "10", "--standin", "0.02"])
    seconds = {"plain": [0.100 + i / 1000 for i in range(10)], "mtls": [0.104 + i / 1000 for i in range(10)]}
    report = render(args, seconds, [(2.0, 1.5, 1.0), (2.5, 1.6, 1.1)])
    assert "| mutual TLS adds (ms) | 4.0 | 4.0 | 4.0 |" in report
    assert "before: 2.00, 1.50, 1.00; after: 2.50, 1.60, 1.10" in report
    assert "**not a model**" in report


# --- node hosts (launch.py --role node) over mutual TLS: the rendered lines, the files, the errors -------


def node_host_spec(certs: Path, run_dir: Path, **node_host: object):
    """A cluster with a local node and two nodes on node host gpu1 (its certificate from ``certs``), with tls."""
    return parse_cluster({
        "run_dir": str(run_dir), "worker_queue": {"host": "10.0.0.1", "port": 8081},
        "tls": {"ca_file": str(certs / "ca.crt"), "cert_file": str(certs / f"{BALANCER}.pem")},
        "node_hosts": [{"name": NODE_HOST, "address": "10.0.0.5", **node_host}],
        "nodes": [{"name": "local", "worker": {"port": 7960}},
                  {"name": "far", "node_host": NODE_HOST, "web": {"port": 7860}, "worker": {"port": 7870}},
                  {"name": "named", "node_host": NODE_HOST, "cert_name": "gpu1-alias", "worker": {"port": 7871}}],
    })


def test_a_node_host_part_with_its_own_command_is_refused_with_tls(certs: Path, tmp_path: Path) -> None:
    """The sidecar gives a node host's parts their TLS flags; a part's own command would serve plain HTTP."""
    data = {"run_dir": str(tmp_path), "worker_queue": {"host": "10.0.0.1", "port": 8081},
            "node_hosts": [{"name": NODE_HOST, "address": "10.0.0.5"}],
            "nodes": [{"name": "far", "node_host": NODE_HOST,
                       "worker": {"port": 7870, "command": ["python3", "-m", "webui.worker", "--port", "7870"]}}]}
    assert parse_cluster(data).nodes[0].worker.command  # without tls it is the operator's command line
    data["tls"] = {"ca_file": str(certs / "ca.crt"), "cert_file": str(certs / f"{BALANCER}.pem")}
    with pytest.raises(ClusterConfigError, match=r"nodes\.far\.worker\.command: with tls, .* args instead"):
        parse_cluster(data)


def test_node_host_servers_use_mutual_tls_and_a_plain_agent_check(certs: Path, tmp_path: Path) -> None:
    spec = node_host_spec(certs, tmp_path)
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    servers = {(line.split()[1], line.split()[2]): line for line in text.splitlines() if line.startswith("    server ")}
    tls = (f" ssl verify required ca-file {config_path_arg(certs / 'ca.crt')}"
           f" crt {config_path_arg(certs / f'{BALANCER}.pem')} verifyhost ")
    for address in ("10.0.0.5:7860", "10.0.0.5:7870"):  # web front, worker (and its probe server)
        line = servers[("far", address)]
        assert tls + NODE_HOST in line and f"certificate must name {NODE_HOST}" in line, line
        assert "agent-check agent-addr 10.0.0.5 agent-port 8406" in line or " track " in line, line
    assert tls + "gpu1-alias" in servers[("named", "10.0.0.5:7871")]
    assert " ssl " not in servers[("local", "127.0.0.1:7960")]  # on the balancer's own host: plain on loopback
    assert spec.worker_queue_url == "https://10.0.0.1:8081"


def test_a_node_host_serves_with_its_certificate_and_probes_with_a_throwaway_ca(certs: Path, tmp_path: Path) -> None:
    from balancer.multihost.part_tls import NodeHostTLS
    from balancer.operations.parts import part_command

    spec = node_host_spec(certs, tmp_path)
    host = spec.node_host(NODE_HOST)
    tls = NodeHostTLS.prepare(spec, host)
    assert tls is not None and tls.server_cert == certs / f"{NODE_HOST}.pem"  # NAME.pem beside ca.crt
    far = spec.nodes[1]
    command = part_command(spec, far, "worker", far.worker, tls)
    assert command[command.index("--tls-cert") + 1] == str(certs / f"{NODE_HOST}.pem")
    assert command[command.index("--tls-ca") + 1] == str(tls.parts_ca)
    web = part_command(spec, far, "web", far.web, tls)
    assert web[web.index("--worker-queue") + 1] == "https://10.0.0.1:8081" and "--worker-queue-ca" in web
    assert web[web.index("--worker-queue-cert") + 1] == str(certs / f"{NODE_HOST}-queue.pem")  # beside ca.crt
    # A worker records its REST jobs at the jobs service behind the same queue, with its host's queue certificate.
    assert command[command.index("--jobs-url") + 1] == "https://10.0.0.1:8081"
    assert command[command.index("--worker-queue-cert") + 1] == str(certs / f"{NODE_HOST}-queue.pem")
    assert spec.part_url(far, far.worker) == "https://10.0.0.5:7870"
    assert spec.part_url(spec.nodes[0], spec.nodes[0].worker) == "http://127.0.0.1:7960"

    # Only the probe's certificate and the parts' CA bundle are written (0600); the probe CA's key is not.
    assert sorted(path.name for path in tls.probe_cert.parent.iterdir()) == ["parts-ca.pem", "probe.pem"]
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in tls.probe_cert.parent.iterdir())
    bundle = x509.load_pem_x509_certificates(tls.parts_ca.read_bytes())
    assert bundle[0] == load_cert(certs / "ca.crt") and len(bundle) == 2
    probe = load_cert(tls.probe_cert)
    # The probe certificate is a client's, chains to this host's probe CA only, not to the cluster CA.
    PolicyBuilder().store(Store([bundle[1]])).build_client_verifier().verify(probe, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([bundle[0]])).build_client_verifier().verify(probe, [])
    # A sidecar restart makes a new probe CA: the old probe certificate is no longer trusted.
    NodeHostTLS.prepare(spec, host)
    assert x509.load_pem_x509_certificates(tls.parts_ca.read_bytes())[1] != bundle[1]
    assert tls.probe(NODE_HOST).extensions == {"sni_hostname": NODE_HOST}


@pytest.mark.parametrize("role", ["node", "balancer"])
def test_a_missing_own_certificate_is_one_line(certs: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                               role: str) -> None:
    from launch import main

    data = {"run_dir": str(tmp_path / "run"), "worker_queue": {"host": "10.0.0.1", "port": 8081},
            "tls": {"ca_file": str(certs / "ca.crt"), "cert_file": str(tmp_path / "lb9.pem")},
            "node_hosts": [{"name": "gpu7", "address": "127.0.0.1", "host_agent_port": free_port()}],
            "nodes": [{"name": "x", "node_host": "gpu7", "worker": {"port": free_port()}}]}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["--cluster", str(path), "--role", role]) == 2
    expected = {"node": f"node_hosts.gpu7.cert_file (default): {certs / 'gpu7.pem'} is not a file",
                "balancer": f"tls.cert_file: {tmp_path / 'lb9.pem'} is not a file"}[role]
    assert capsys.readouterr().err.strip() == f"error: {expected} (python -m balancer.multihost.certs makes it)"


@pytest.mark.parametrize("role, missing, setting", [
    ("node", f"{NODE_HOST}-queue.pem", f"node_hosts.{NODE_HOST}.queue_cert_file (default)"),
    ("balancer", "queue-ca.crt", "tls.queue_ca_file (default)"),
])
def test_a_missing_queue_file_is_one_line(certs: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          role: str, missing: str, setting: str) -> None:
    from launch import main

    copy = tmp_path / "certs"
    copy.mkdir()
    for path in certs.glob("*.*"):
        if path.name != missing and not path.name.endswith(".key"):
            (copy / path.name).write_bytes(path.read_bytes())
    data = {"run_dir": str(tmp_path / "run"), "worker_queue": {"host": "10.0.0.1", "port": 8081},
            "tls": {"ca_file": str(copy / "ca.crt"), "cert_file": str(copy / f"{BALANCER}.pem")},
            "node_hosts": [{"name": NODE_HOST, "address": "127.0.0.1", "host_agent_port": free_port()}],
            "nodes": [{"name": "x", "node_host": NODE_HOST, "web": {"port": free_port()},
                       "worker": {"port": free_port()}}]}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["--cluster", str(path), "--role", role]) == 2
    expected = f"error: {setting}: {copy / missing} is not a file (python -m balancer.multihost.certs makes it)"
    assert capsys.readouterr().err.strip() == expected


def test_the_hosts_example_with_the_documented_certificates_is_all_tls(tmp_path: Path) -> None:
    """The example's certificate command, run as written, gives the files its tls block names."""
    from bench.harness.processes import REPO

    example = REPO / "assets" / "cluster.hosts.example.yaml"
    command = next(line for line in example.read_text().splitlines() if "python -m balancer.multihost.certs" in line)
    args = command.split("python -m balancer.multihost.certs", 1)[1].split()
    assert args[:2] == ["--out", "certs"]
    result = make_certs(tmp_path / "certs", *args[2:])
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(example.read_text())
    tls = {key: str(tmp_path / value) for key, value in data["tls"].items()}
    spec = parse_cluster({**data, "tls": tls, "run_dir": str(tmp_path / "run")})
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    servers = node_server_lines(text)
    assert len(servers) == 9 and all(" ssl verify required " in line for line in servers)  # 3 webs, workers, probes
    for host in spec.node_hosts:
        spec.check_own_certificate(host)  # gpu1.pem, gpu2.pem beside ca.crt
    spec.check_own_certificate(None)
