#!/usr/bin/env python3
"""Oxy's side-by-side benchmarks: starts Oxy and its peers (nginx, HAProxy, Squid, Caddy)
on loopback with equivalent settings, drives the same load against each in alternation
(A B A B, several rounds) and prints a table of medians and ratios Oxy/peer.

Run through `benches/run` (or `make bench`), which installs the peers and builds the
release binaries first. Everything started here is stopped on exit, even on failure.
`--bin-dir target/debug` (or OXY_BIN_DIR) runs already built binaries without a build.

The layer-3 scenarios (`connect-ip-tcp`, `tun-forward`) need root: they run in network
namespaces of their own (`oxyb-<pid>-<tag>`), deleted with every process in them at the
end of the scenario, even on failure. Without root they are skipped with a note.
"""

import argparse
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where oxy, oxy-loadgen and oxy-client are: target/release unless --bin-dir or OXY_BIN_DIR.
BIN = ROOT / "target" / "release"
# `server.scheduling` of the single-worker Oxy rows (`--scheduling`); None: Oxy's default.
SCHEDULING: str | None = None
# CPU sets (taskset lists) for the contender under measurement and for everything else
# (load generators, origin, targets); None leaves a role unpinned. Set by main().
PIN: dict[str, str | None] = {"proxy": None, "load": None}


def pinned(argv: list[str], role: str | None) -> list[str]:
    """`argv` under `taskset -c CPUS` for the role's CPU set, when pinning is on."""
    cpus = PIN.get(role) if role else None
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def process_tree(pid: int) -> list[int]:
    """`pid` and its living descendants (nginx's and h2o's workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        one = todo.pop()
        tree.append(one)
        todo += children.get(one, [])
    return tree


def repin(pid: int, cpus: str) -> None:
    """Moves `pid`, its descendants and all their threads onto the CPU list `cpus`."""
    for one in process_tree(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(one)], capture_output=True, check=False)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its living descendants, from /proc."""
    ticks = 0
    for one in process_tree(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port free for both TCP and UDP (QUIC listens on UDP beside TCP)."""
    return free_ports(["port"])["port"]


def ephemeral_floor() -> int:
    """The lowest port the kernel gives a connection's own end (net.ipv4.ip_local_port_range)."""
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


# The next port free_ports tries: below the ephemeral range and downwards, so that no
# connection the benchmarks make takes a port between its choice and its server's bind,
# and no two calls give the same one.
NEXT_PORT = ephemeral_floor() - 1


def free_ports(names: list[str]) -> dict[str, int]:
    """A distinct loopback port, free for both TCP and UDP, for each name, taken from
    below the kernel's ephemeral range: the kernel never hands those out on its own, so
    a port stays free until the server it is meant for binds it."""
    global NEXT_PORT
    ports: dict[str, int] = {}
    for name in names:
        while name not in ports:
            port, NEXT_PORT = NEXT_PORT, NEXT_PORT - 1
            if port < 1024:
                raise RuntimeError("no free loopback port below the ephemeral range")
            try:
                with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    tcp.bind(("127.0.0.1", port))
                    udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports[name] = port
    return ports


def wait_for_port(port: int, what: str, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def wait_for_udp_echo(port: int, what: str, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.time() < deadline:
            try:
                s.sendto(b"ping", ("127.0.0.1", port))
                if s.recv(16) == b"ping":
                    return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError(f"{what} did not echo on UDP 127.0.0.1:{port} within {timeout}s")


# Probes run inside a network namespace by wait_in_netns: exit 0 once host:port answers.
TCP_PROBE = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5).close()"
UDP_PROBE = ("import socket,sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3); "
             "s.sendto(b'ping', (sys.argv[1], int(sys.argv[2]))); sys.exit(s.recv(16) != b'ping')")


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def wait_in_netns(netns: str, argv: list[str], what: str, timeout: float = 15.0, output: str | None = None,
                  proc: subprocess.Popen | None = None) -> None:
    """Polls `ip netns exec NETNS argv...` until it exits 0 (and prints `output`, when
    given): wait_for_port and wait_for_udp_echo cannot reach into a namespace. Gives up
    early when `proc`, the process waited for, has exited."""
    deadline, last = time.time() + timeout, ""
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({proc.returncode})")
        try:
            done = subprocess.run(in_netns(netns, argv), capture_output=True, text=True, timeout=5)
            if done.returncode == 0 and (output is None or output in done.stdout):
                return
            last = (done.stdout + done.stderr).strip()[-300:]
        except subprocess.TimeoutExpired:
            last = "the check timed out"
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {timeout}s in network namespace {netns} (last check: {last or 'nothing'})")


def wait_for_port_in(netns: str, address: str, what: str, proc: subprocess.Popen | None = None) -> None:
    host, port = address.rsplit(":", 1)
    wait_in_netns(netns, [sys.executable, "-c", TCP_PROBE, host, port], f"{what} listening on {address}", proc=proc)


def wait_for_udp_echo_in(netns: str, address: str, what: str, proc: subprocess.Popen | None = None) -> None:
    host, port = address.rsplit(":", 1)
    wait_in_netns(netns, [sys.executable, "-c", UDP_PROBE, host, port], f"{what} echoing on UDP {address}", proc=proc)


def wait_for_json_line(path: Path, proc: subprocess.Popen, what: str, timeout: float = 20.0) -> dict:
    """The first line a process writes to its standard output (`path`), as JSON."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if "\n" in text:
            return json.loads(text.split("\n", 1)[0])
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before printing its JSON line")
        time.sleep(0.05)
    raise RuntimeError(f"{what} printed no JSON line within {timeout}s")


def ifname(tag: str) -> str:
    """An interface name of this run: `ob<pid><tag>`, at most 15 bytes."""
    name = f"ob{os.getpid()}{tag}"
    if len(name) > 15:
        raise RuntimeError(f"interface name {name} is longer than 15 bytes")
    return name


class Namespaces:
    """The network namespaces of the layer-3 scenarios, `oxyb-<pid>-<tag>`, each with its
    loopback up. delete_all kills whatever still runs in them (the processes this run
    started there) and deletes them with their devices."""

    def __init__(self):
        self.names: list[str] = []

    def create(self, tag: str) -> str:
        name = f"oxyb-{os.getpid()}-{tag}"
        run(["ip", "netns", "add", name], 10)
        self.names.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"], 10)
        return name

    @staticmethod
    def pids(name: str) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10)
        return [int(p) for p in done.stdout.split()]

    def delete_all(self) -> None:
        for name in reversed(self.names):
            deadline = time.time() + 5
            while (pids := self.pids(name)) and time.time() < deadline:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)
        self.names.clear()


def layer3_unavailable() -> str | None:
    """Why the scenarios in network namespaces cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs, TUN devices)"
    if not shutil.which("ip"):
        return "needs iproute2's `ip`"
    if not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun"
    return None


class Processes:
    """Every process the run started, stopped in reverse order on exit."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.running: list[tuple[str, subprocess.Popen]] = []
        self.by_name: dict[str, subprocess.Popen] = {}  # the latest process started under each name

    def start(self, name: str, argv: list[str], ports: list, udp_echo: int | str | None = None,
              env: dict | None = None, netns: str | None = None, json_line: bool = False,
              role: str | None = "proxy") -> subprocess.Popen:
        """Starts `argv` (pinned to the CPU set of `role`) and waits until it listens on `ports` (loopback port numbers, or
        `host:port` inside `netns`), echoes on UDP `udp_echo`, and, with `json_line`,
        has printed a JSON line on its standard output (kept in `proc.json_line`)."""
        log = open(self.workdir / f"{name}.log", "wb")
        out = self.workdir / f"{name}.out"
        stdout = open(out, "wb") if json_line else log
        proc = subprocess.Popen(in_netns(netns, pinned(argv, role)), stdout=stdout, stderr=log if json_line else subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **env} if env else None)
        self.running.append((name, proc))
        self.by_name[name] = proc
        if netns:
            checks = [lambda port=port: wait_for_port_in(netns, port, name, proc) for port in ports]
            if udp_echo is not None:
                checks.append(lambda: wait_for_udp_echo_in(netns, udp_echo, name, proc))
        else:
            checks = [lambda port=port: wait_for_port(port, name) for port in ports]
            if udp_echo is not None:
                checks.append(lambda: wait_for_udp_echo(udp_echo, name))
        if json_line:
            checks.append(lambda: setattr(proc, "json_line", wait_for_json_line(out, proc, name)))
        for check in checks:
            try:
                check()
            except RuntimeError as e:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not start ({e}); its log ends with:\n{tail}")
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        self.stop_from(0)

    def stop_from(self, mark: int) -> None:
        """Stops the processes started since `len(self.running)` was `mark`."""
        for _, proc in reversed(self.running[mark:]):
            self.stop(proc)
        del self.running[mark:]


def run(argv: list[str], timeout: float, role: str | None = None) -> str:
    done = subprocess.run(pinned(argv, role), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-1500:]}")
    return done.stdout


# ---------------------------------------------------------------- configurations


def write_certificate(workdir: Path) -> tuple[Path, Path, Path, Path]:
    """A CA and a localhost leaf it signs (key, leaf, leaf + key for HAProxy, CA).

    The leaf is not a CA: QUIC clients (rustls) refuse a CA certificate as a server's,
    and BoringSSL does not take a self-signed leaf as its own trust anchor, so the
    clients verify with the separate CA."""
    ca_key, ca = workdir / "ca.key", workdir / "ca.crt"
    key, csr, crt, pem = workdir / "bench.key", workdir / "bench.csr", workdir / "bench.crt", workdir / "bench.pem"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=oxy-bench CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", str(ca_key), "-out", str(ca)], 30)
    run(["openssl", "req", "-new", *ec, "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr)], 30)
    extensions = workdir / "leaf.ext"
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                          "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-set_serial", "2",
         "-days", "2", "-extfile", str(extensions), "-out", str(crt)], 30)
    pem.write_text(crt.read_text() + key.read_text())
    return key, crt, pem, ca


def oxy_server() -> dict:
    """The `server:` section of every single-worker Oxy in the runs: one worker thread,
    under `--scheduling` when it is given (Oxy's default otherwise)."""
    server = {"worker_threads": 1, "shutdown_timeout": "1s"}
    if SCHEDULING:
        server["scheduling"] = SCHEDULING
    return server


def oxy_config(workdir: Path, ports: dict, crt: Path, key: Path) -> Path:
    origin = f"http://127.0.0.1:{ports['origin']}"
    config = {
        "server": oxy_server(),
        "telemetry": {"listen": f"127.0.0.1:{ports['oxy_telemetry']}", "log": {"level": "warn"}},
        "egress": {"allow": ["127.0.0.0/8"]},
        "endpoints": [
            {"name": "reverse", "listen": [f"127.0.0.1:{ports['oxy_h1']}"], "http": {"upstream": origin}},
            {"name": "reverse-tls", "listen": [f"127.0.0.1:{ports['oxy_h2']}"], "http": {"upstream": origin},
             "tls": {"enabled": True, "certificates": [{"chain": str(crt), "key": str(key)}]}},
            {"name": "proxy", "listen": [f"127.0.0.1:{ports['oxy_connect']}"], "http": {"connect": True}},
            {"name": "forward", "listen": [f"127.0.0.1:{ports['oxy_forward']}"], "http": {"forward_proxy": True}},
            {"name": "l4-source", "protocol": "tcp", "listen": [f"127.0.0.1:{ports['oxy_l4_source']}"],
             "tcp": {"target": f"127.0.0.1:{ports['source']}"}},
            {"name": "l4-echo", "protocol": "tcp", "listen": [f"127.0.0.1:{ports['oxy_l4_echo']}"],
             "tcp": {"target": f"127.0.0.1:{ports['echo']}"}},
            # HTTP/3 on UDP beside TCP (and HTTP/2 over TLS on TCP): the reverse proxy for
            # h3-get, CONNECT-UDP for connect-udp-*, CONNECT-UDP and CONNECT-IP for connect-ip-*.
            {"name": "h3", "listen": [f"127.0.0.1:{ports['oxy_h3']}"],
             "http": {"upstream": origin, "h3": {"enabled": True}, "connect_udp": {"enabled": True},
                      "connect_ip": {"enabled": True}},
             "tls": {"enabled": True, "certificates": [{"chain": str(crt), "key": str(key)}]}},
        ],
    }
    path = workdir / "oxy.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def firewall_config(workdir: Path, ports: dict, ca: Path) -> Path:
    """The http-firewall of https-interception: one endpoint intercepts CONNECT tunnels to
    the origin's HTTPS port (certificates minted from a CA made here, the origin verified
    against the bench CA), the other tunnels them; both with two of the shipped global rules (scanners, no-dotfiles)."""
    ica_key, ica = workdir / "interception-ca.key", workdir / "interception-ca.crt"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=oxy-bench interception CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", str(ica_key), "-out", str(ica)], 30)
    # One file the load generator trusts for both: the minted leaves and the origin's own.
    (workdir / "both-cas.crt").write_text(ica.read_text() + ca.read_text())
    config = {
        "server": oxy_server(),
        "telemetry": {"listen": f"127.0.0.1:{ports['firewall_telemetry']}", "log": {"level": "warn"}},
        "egress": {"allow": ["127.0.0.0/8"]},
        "endpoints": [
            {"name": "intercept", "listen": [f"127.0.0.1:{ports['firewall_intercept']}"],
             "http": {"connect": True, "client": {"ca_file": str(ca)}},
             "tls_interception": {"ca_chain": str(ica), "ca_key": str(ica_key)},
             "app": {"inspect_ports": [ports["origin_tls"]]}},
            {"name": "tunnel", "listen": [f"127.0.0.1:{ports['firewall_tunnel']}"], "http": {"connect": True}},
        ],
        "app": {"rules": [{"name": "scanners", "headers": ["user-agent: (?i)(sqlmap|nikto)"]},
                          {"name": "no-dotfiles", "path_patterns": ["/\\.(git|env)(/|$)"]}]},
    }
    path = workdir / "firewall.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def connect_ip_config(workdir: Path, listen: str) -> Path:
    """The Oxy of connect-ip-tcp, in its proxy-side namespace: CONNECT and CONNECT-IP
    (user-space off-ramp) on one plain-TCP endpoint, egress only to the targets' range;
    its link MTU (ip.mtu) is 9000, and each client's TUN device sets its own."""
    config = {
        "server": oxy_server(),
        "telemetry": {"listen": "127.0.0.1:9090", "log": {"level": "warn"}},
        "egress": {"allow": ["198.51.100.0/24"]},
        "endpoints": [{"name": "ip", "listen": [listen], "ip": {"mtu": 9000},
                       "http": {"connect": True, "connect_ip": {"enabled": True}}}],
    }
    path = workdir / "oxy-connect-ip.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def tun_config(workdir: Path, device: str, echo: str) -> Path:
    """The fixture app of tun-forward: a `protocol: tun` endpoint whose device routes
    198.51.100.0/24; its IP flow hook forwards (terminates) every flow, and its egress
    hook sends UDP flows to the echo."""
    config = {
        "server": oxy_server(),
        "telemetry": {"listen": "127.0.0.1:9090", "log": {"level": "warn"}},
        "egress": {"allow": ["127.0.0.0/8"]},
        "endpoints": [{"name": "tun", "protocol": "tun",
                       "ip": {"tun": {"name": device, "addresses": ["10.77.0.1/24"], "routes": ["198.51.100.0/24"]}},
                       "app": {"egress_udp_target": echo}}],
    }
    path = workdir / "fixture-tun.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def egress_router_config(workdir: Path, ports: dict) -> Path:
    """examples/egress-router as a forward proxy (absolute-form requests), with a firewall
    and a route like config/egress-router.yaml's: its egress hook runs for every request."""
    config = {
        "server": oxy_server(),
        "telemetry": {"listen": f"127.0.0.1:{ports['router_telemetry']}", "log": {"level": "warn"}},
        "egress": {"allow": ["127.0.0.0/8"]},
        "endpoints": [{"name": "forward", "listen": [f"127.0.0.1:{ports['router_forward']}"],
                       "http": {"forward_proxy": True}}],
        "app": {"firewall": {"deny": [{"hosts": [".internal.example"]}, {"ports": [25]},
                                      {"networks": ["169.254.0.0/16"]}]},
                "routes": [{"name": "alice-egress", "users": ["alice"], "bind_to": "127.0.0.2"}]},
    }
    path = workdir / "egress-router.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def absolute_form_script(workdir: Path, ports: dict) -> Path:
    """A wrk script whose requests are absolute-form (`GET http://origin/1k`), as a client
    of a forward proxy sends them."""
    origin = f"127.0.0.1:{ports['origin']}"
    path = workdir / "absolute-form.lua"
    path.write_text(f'wrk.path = "http://{origin}/1k"\nwrk.headers["Host"] = "{origin}"\n')
    return path


def scaled_configs(workdir: Path, ports: dict, workers: int) -> dict[str, tuple[Path, int]]:
    """Oxy, nginx and HAProxy as HTTP/1.1 reverse proxies with `workers` worker threads
    (processes for nginx), each alone on its own port: (config, port) by contender."""
    origin = f"127.0.0.1:{ports['origin']}"
    oxy = {}
    for scheduling, port in (("per_thread", "scale_oxy"), ("work_stealing", "scale_oxy_work_stealing")):
        oxy[scheduling] = (workdir / f"oxy-w{workers}-{scheduling}.yaml", ports[port])
        oxy[scheduling][0].write_text(json.dumps({
            "server": {"worker_threads": workers, "shutdown_timeout": "1s", "scheduling": scheduling},
            # Port 0: both Oxy configurations run at once.
            "telemetry": {"listen": "127.0.0.1:0", "log": {"level": "warn"}},
            "egress": {"allow": ["127.0.0.0/8"]},
            "endpoints": [{"name": "reverse", "listen": [f"127.0.0.1:{ports[port]}"],
                           "http": {"upstream": f"http://{origin}"}}],
        }, indent=2))
    prefix = workdir / f"nginx-w{workers}"
    nginx = workdir / f"nginx-w{workers}.conf"
    nginx.write_text(nginx_head(prefix, workers) + f"""
  upstream origin {{ server {origin}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{ports['scale_nginx']};
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
    haproxy = workdir / f"haproxy-w{workers}.cfg"
    haproxy.write_text(f"""
global
  nbthread {workers}
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend h1
  bind 127.0.0.1:{ports['scale_haproxy']}
  default_backend origin
backend origin
  http-reuse always
  server origin {origin}
""")
    return {"oxy": oxy["per_thread"], "oxy work_stealing": oxy["work_stealing"],
            "nginx": (nginx, ports["scale_nginx"]), "haproxy": (haproxy, ports["scale_haproxy"])}


def h2o_config(workdir: Path, ports: dict, crt: Path, key: Path) -> Path:
    """h2o (Debian's 2.2, which has no HTTP/3) as an HTTP/1.1 and HTTP/2 over TLS reverse
    proxy with one thread; it keeps upstream connections alive by default."""
    state = workdir / "h2o"
    state.mkdir(exist_ok=True)
    state.chmod(0o777)
    path = workdir / "h2o.conf"
    path.write_text(f"""
num-threads: 1
max-connections: 20000
user: nobody
pid-file: {state}/h2o.pid
error-log: {state}/error.log
listen:
  host: 127.0.0.1
  port: {ports['h2o_h1']}
listen:
  host: 127.0.0.1
  port: {ports['h2o_h2']}
  ssl:
    certificate-file: {crt}
    key-file: {key}
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://127.0.0.1:{ports['origin']}/
""")
    return path


def nginx_head(prefix: Path, workers: int) -> str:
    """The start of an nginx configuration whose state lives under `prefix`, up to the
    `http` block's own directives (the caller adds servers and closes the block)."""
    prefix.mkdir(exist_ok=True)
    prefix.chmod(0o777)  # nginx's workers run unprivileged
    return f"""
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  keepalive_requests 1000000;
"""


def nginx_config(workdir: Path, ports: dict, crt: Path, key: Path, origin: bool, origin_workers: int = 1) -> Path:
    name = "origin" if origin else "nginx"
    prefix = workdir / name
    common = nginx_head(prefix, origin_workers if origin else 1)
    if origin:
        (prefix / "www").mkdir(exist_ok=True)
        (prefix / "www" / "1k").write_bytes(b"x" * 1024)
        (prefix / "www").chmod(0o755)
        body = f"""
  server {{
    listen 127.0.0.1:{ports['origin']};
    listen 127.0.0.1:{ports['origin_tls']} ssl;
    ssl_certificate {crt};
    ssl_certificate_key {key};
    location / {{ root {prefix}/www; }}
    location = /nginx-status {{ stub_status; }}
  }}
}}
"""
    else:
        body = f"""
  upstream origin {{ server 127.0.0.1:{ports['origin']}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{ports['nginx_h1']};
    listen 127.0.0.1:{ports['nginx_h2']} ssl http2;
    ssl_certificate {crt};
    ssl_certificate_key {key};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    path = workdir / f"{name}.conf"
    path.write_text(common + body)
    return path


def haproxy_config(workdir: Path, ports: dict, pem: Path, maxconn: int) -> Path:
    path = workdir / "haproxy.cfg"
    path.write_text(f"""
global
  nbthread 1
  maxconn {maxconn}
  maxpipes 128
defaults
  maxconn {maxconn}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
frontend h1
  mode http
  bind 127.0.0.1:{ports['haproxy_h1']}
  bind 127.0.0.1:{ports['haproxy_h2']} ssl crt {pem} alpn h2,http/1.1
  default_backend origin
backend origin
  mode http
  http-reuse always
  server origin 127.0.0.1:{ports['origin']}
listen l4-source
  mode tcp
  option splice-auto
  bind 127.0.0.1:{ports['haproxy_l4_source']}
  server source 127.0.0.1:{ports['source']}
listen l4-echo
  mode tcp
  option splice-auto
  bind 127.0.0.1:{ports['haproxy_l4_echo']}
  server echo 127.0.0.1:{ports['echo']}
""")
    return path


def squid_config(workdir: Path, ports: dict) -> Path:
    state = workdir / "squid"
    state.mkdir(exist_ok=True)
    state.chmod(0o777)
    path = workdir / "squid.conf"
    path.write_text(f"""
http_port 127.0.0.1:{ports['squid']}
http_access allow all
cache deny all
cache_mem 8 MB
access_log none
cache_log {state}/cache.log
pid_filename {state}/squid.pid
coredump_dir {state}
max_filedescriptors 20000
shutdown_lifetime 0 seconds
visible_hostname bench
""")
    return path


def caddy_config(workdir: Path, ports: dict, crt: Path, key: Path) -> Path:
    """Caddy 2 as an HTTP/3 reverse proxy; it never reaches out (no admin, no ACME)."""
    state = workdir / "caddy"
    state.mkdir(exist_ok=True)
    path = workdir / "Caddyfile"
    path.write_text(f"""{{
\tadmin off
\tauto_https off
\tstorage file_system {state}/storage
\tservers {{
\t\tprotocols h1 h2 h3
\t}}
\tlog {{
\t\toutput stderr
\t\tlevel ERROR
\t}}
}}
https://localhost:{ports['caddy_h3']} {{
\tbind 127.0.0.1
\ttls {crt} {key}
\treverse_proxy 127.0.0.1:{ports['origin']}
}}
""")
    return path


def udp_echo(port: int) -> None:
    """The UDP echo target of the CONNECT-UDP scenarios (`bench.py --udp-echo PORT`): up to
    64 datagrams per recvmmsg(2), returned with one sendmmsg(2)."""

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class Msghdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(Iovec)),
                    ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    class Mmsghdr(ctypes.Structure):
        _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]

    batch, size, msg_waitforone = 64, 65536, 0x10000
    libc = ctypes.CDLL(None, use_errno=True)
    libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind(("127.0.0.1", port))
    buffers = [ctypes.create_string_buffer(size) for _ in range(batch)]
    names = [ctypes.create_string_buffer(128) for _ in range(batch)]
    iovs, msgs = (Iovec * batch)(), (Mmsghdr * batch)()
    for i in range(batch):
        iovs[i].base, iovs[i].len = ctypes.addressof(buffers[i]), size
        msgs[i].hdr.name, msgs[i].hdr.namelen = ctypes.addressof(names[i]), 128
        msgs[i].hdr.iov, msgs[i].hdr.iovlen = ctypes.pointer(iovs[i]), 1
    fd, vector, stride = sock.fileno(), ctypes.addressof(msgs), ctypes.sizeof(Mmsghdr)
    while True:
        n = libc.recvmmsg(fd, vector, batch, msg_waitforone, None)
        if n <= 0:
            continue
        for i in range(n):
            iovs[i].len = msgs[i].len
        sent = 0
        while sent < n:  # a datagram the kernel cannot take now is dropped, as UDP may
            m = libc.sendmmsg(fd, vector + sent * stride, n - sent, 0)
            sent += m if m > 0 else 1
        for i in range(n):
            iovs[i].len, msgs[i].hdr.namelen = size, 128


# ---------------------------------------------------------------- measurements


def wrk(port: int, seconds: int, connections: int = 64, script: Path | None = None, threads: int = 1) -> dict:
    """wrk's rate and latency; `requests` is the count, for CPU per request."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["-s", str(script)] if script else []
    out = run([*argv, f"http://127.0.0.1:{port}/1k"], seconds + 30, "load")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses on port {port}")
    failed = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    connect, read, write, timeouts = map(int, failed.groups()) if failed else (0, 0, 0, 0)
    if connect or read or write:
        raise RuntimeError(f"wrk saw socket errors on port {port}: {failed.group(0)}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    # Requests unanswered within wrk's 2 s (not in the latencies): shown, not fatal.
    return {"req/s": rps, "p50 ms": latency("50"), "p99 ms": latency("99"), "timeouts": timeouts,
            "requests": requests}


def h2load(port: int, seconds: int, rate: int | None = None, h1: bool = False) -> dict:
    """h2load over TLS (h2), or over plain HTTP/1.1 with `h1`: 4 connections x 100 streams
    as fast as it goes, or, with `rate`, a fixed total rate of requests per second (50
    HTTP/1.1 connections, or 10 h2 connections x 10 streams, each at rate/connections)."""
    if rate is None:
        shape = ["-c4", "-m100"]
    else:
        clients = 50 if h1 else 10
        shape = [f"-c{clients}", "-m1" if h1 else "-m10", f"--rps={rate // clients}"]
    url = f"http://127.0.0.1:{port}/1k" if h1 else f"https://127.0.0.1:{port}/1k"
    out = run(["h2load", *shape, *(["--h1"] if h1 else []), "-D", str(seconds), url], seconds + 60, "load")
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if status and (int(status.group(3)) or int(status.group(4))):
        raise RuntimeError(f"h2load saw error responses on port {port}: {status.group(0)}")
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored", out)
    if int(done.group(5)) or int(done.group(6)):
        raise RuntimeError(f"h2load saw failed requests on port {port}: {done.group(0)}")
    if not h1 and "h2" not in out:
        raise RuntimeError(f"h2load did not negotiate h2 on port {port}")
    return {"req/s": rps, "requests": int(done.group(4))}


def origin_accepts(port: int) -> int:
    """Connections the origin nginx has accepted so far (its stub_status)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /nginx-status HTTP/1.0\r\nHost: origin\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    found = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", answer)
    if not found:
        raise RuntimeError(f"the origin's stub_status answered {answer[-300:]!r}")
    return int(found.group(1))


def egress_pool_counts(telemetry_port: int) -> str:
    """oxy_http_egress_connections_total by kind, from an Oxy's /metrics."""
    with socket.create_connection(("127.0.0.1", telemetry_port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: oxy\r\n\r\n")
        text = b""
        while chunk := s.recv(65536):
            text += chunk
    counts = re.findall(r'oxy_http_egress_connections_total\{[^}]*kind="(\w+)"[^}]*\} (\d+)', text.decode())
    return ", ".join(f"{kind} {n}" for kind, n in counts) or "no oxy_http_egress_connections_total"


def per_worker(out: dict, workers: int) -> dict:
    return {"req/s": out["req/s"], "req/s per worker": out["req/s"] / workers, "p99 ms": out["p99 ms"],
            "timeouts": out["timeouts"], "requests": out["requests"]}


def add_scaling_ratios(results: list[dict], scenarios: list[str]) -> None:
    """Adds to each scaling row its req/s over the same contender's at the fewest workers."""
    rows = [r for r in results if r["scenario"] in scenarios]
    base = {r["contender"]: r["req/s"] for r in rows if r["scenario"] == scenarios[0]}
    for r in rows:
        if r["scenario"] != scenarios[0] and base.get(r["contender"]):
            r["x first W"] = r["req/s"] / base[r["contender"]]


def loadgen(args: list[str], timeout: float, netns: str | None = None) -> dict:
    return json.loads(run(in_netns(netns, [str(BIN / "oxy-loadgen"), *args]), timeout, "load"))


def oxy_client(args: list[str], timeout: float, netns: str | None = None) -> dict:
    return json.loads(run(in_netns(netns, [str(BIN / "oxy-client"), *args]), timeout, "load").strip().splitlines()[-1])


class Sized:
    """Runs a load of a given size that lasts about `seconds`: the first run for each
    contender calibrates the size from a short run (which also warms it up)."""

    def __init__(self, seconds: int):
        self.seconds = seconds
        self.sizes: dict[str, int] = {}

    def __call__(self, key: str, first: int, measure) -> dict:
        if key not in self.sizes:
            n = first
            out = measure(n)
            while out["elapsed_s"] < 0.5 and n < 10**8:  # too short to judge the rate
                n *= 4
                out = measure(n)
            self.sizes[key] = max(1, int(n * self.seconds / max(out["elapsed_s"], 1e-3)))
        return measure(self.sizes[key])


def udp_load_argv(proxy: str, ca: Path | None, over: str, target: str, count: int, ip: bool = False) -> list[str]:
    argv = ["udp", "--proxy", proxy, *(["--ca", str(ca)] if ca else []), "--over", over, "--target", target,
            "--count", str(count), "--size", "1200", "--flows", "4", "--window", "64", "--timeout", "0.25"]
    return argv + ["--ip"] if ip else argv


def udp_load(proxy: str, ca: Path | None, over: str, target: str, count: int, seconds: int, ip: bool = False,
             netns: str | None = None) -> dict:
    """oxy-client's CONNECT-UDP echo load: 4 flows, 1200-byte datagrams, 64 in flight each.
    With `ip`, each flow is UDP packets inside a CONNECT-IP stream (scope */17) instead;
    `--over direct` sends plain UDP to the target (the proxy is then unused)."""
    out = oxy_client(udp_load_argv(proxy, ca, over, target, count, ip), 3 * seconds + 120, netns)
    if not 200 <= out["status"] < 300:
        raise RuntimeError(f"{'CONNECT-IP' if ip else 'CONNECT-UDP'} over {over} through {proxy} answered {out['status']}")
    return out


def datagram_rates(out: dict) -> dict:
    return {"datagrams/s": out["datagrams_per_s"], "MB/s": out["bytes_per_s"] / 1e6,
            "lost %": 100.0 * (out["sent"] - out["received"]) / max(out["sent"], 1)}


def h3_get(url: str, ca: Path, requests: int, seconds: int) -> dict:
    """oxy-client's HTTP/3 GET load; requests/s counts the 200s only. A few failures in
    tens of thousands are tolerated (and shown): against Caddy, oxy-client counts about
    one in 15,000 as failed, likely where Caddy has answered and stopped the request
    stream (STOP_SENDING, H3_NO_ERROR) before the client ended it (see findings.md)."""
    out = oxy_client(["get", url, "--ca", str(ca), "--requests", str(requests), "--concurrency", "32"],
                     3 * seconds + 120)
    if out["failed"] > max(1, requests // 1000):
        raise RuntimeError(f"oxy-client get saw {out['failed']} of {requests} requests to {url} fail")
    return out


def route(contender: dict, target: str) -> list[str]:
    """loadgen arguments reaching `target` (source or echo) through a contender."""
    via = contender[target]
    argv = ["--to", f"127.0.0.1:{via['port']}"]
    if via.get("connect"):
        argv += ["--connect", via["connect"]]
    return argv


# ---------------------------------------------------------------- layer 3, in network namespaces

# `--proxy` is required by oxy-client but unused by `--over direct`.
UNUSED_PROXY = "http://127.0.0.1:9"


def start_connect_ip_tcp(procs: Processes, spaces: Namespaces, workdir: Path) -> tuple[str, dict]:
    """connect-ip-tcp's namespaces: P (the proxy side: Oxy on 10.203.0.1, oxy-loadgen's
    targets on 198.51.100.1, an address only P has) and C (the client side: oxy-client's
    TUN device routing 198.51.100.0/24 through CONNECT-IP), joined by a veth pair.
    Returns C and each contender's oxy-loadgen arguments, to run in C."""
    p, c = spaces.create("p"), spaces.create("c")
    veth_p, veth_c = ifname("vp"), ifname("vc")
    run(["ip", "-n", p, "link", "add", veth_p, "type", "veth", "peer", "name", veth_c, "netns", c], 10)
    for ns, dev, address in ((p, veth_p, "10.203.0.1/30"), (c, veth_c, "10.203.0.2/30")):
        run(["ip", "-n", ns, "addr", "add", address, "dev", dev], 10)
        run(["ip", "-n", ns, "link", "set", dev, "up"], 10)
    proxy = f"10.203.0.1:{free_port()}"
    procs.start("oxy-p", [str(BIN / "oxy"), "--config", str(connect_ip_config(workdir, proxy))], [proxy], netns=p)
    # One byte source per client device: 198.51.100.1 through a 1500-byte link (the
    # usual VPN-like MTU), 198.51.100.2 through a 9000-byte one.
    sources = {}
    for host, mtu in (("198.51.100.1", 1500), ("198.51.100.2", 9000)):
        run(["ip", "-n", p, "addr", "add", f"{host}/32", "dev", "lo"], 10)
        source, echo = f"{host}:7001", f"{host}:7002"
        procs.start(f"targets-p-{mtu}", [str(BIN / "oxy-loadgen"), "serve", "--source", source, "--echo", echo],
                    [source, echo], netns=p, role="load")
        client = procs.start(f"connect-ip-client-{mtu}",
                             [str(BIN / "oxy-client"), "ip", "--proxy", f"http://{proxy}", "--over", "h2",
                              "--tun", ifname(f"c{mtu // 1000}"), "--mtu", str(mtu), "--route", f"{host}/32"],
                             [], netns=c, json_line=True, role="load")
        if client.json_line.get("status") != 200:
            raise RuntimeError(f"CONNECT-IP through {proxy} answered {client.json_line}")
        wait_for_port_in(c, source, f"the byte source through CONNECT-IP (MTU {mtu})", client)
        sources[mtu] = source
    return c, {"CONNECT (HTTP/1.1)": ["--to", proxy, "--connect", sources[1500]],
               "oxy CONNECT-IP (h2c, TUN client, MTU 1500)": ["--to", sources[1500]],
               "oxy CONNECT-IP (h2c, TUN client, MTU 9000)": ["--to", sources[9000]]}


def start_tun_forward(procs: Processes, spaces: Namespaces, workdir: Path) -> tuple[str, dict]:
    """tun-forward's namespace T: the UDP echo on 127.0.0.1, and the fixture app's
    `protocol: tun` endpoint whose device routes 198.51.100.0/24. Returns T and each
    contender's UDP target, for oxy-client in T."""
    t, echo = spaces.create("t"), "127.0.0.1:7003"
    procs.start("udp-echo-t", [sys.executable, str(Path(__file__).resolve()), "--udp-echo", "7003"], [],
                udp_echo=echo, netns=t, role="load")
    device = ifname("tf")
    app = procs.start("fixture-app", [str(BIN / "fixture-app"), "--config", str(tun_config(workdir, device, echo))],
                      ["127.0.0.1:9090"], netns=t)
    wait_in_netns(t, ["ip", "-o", "addr", "show", "dev", device], f"10.77.0.1/24 on {device}",
                  output="10.77.0.1/24", proc=app)
    wait_in_netns(t, ["ip", "route", "show", "198.51.100.0/24"], f"198.51.100.0/24 through {device}",
                  output=f"dev {device}", proc=app)
    wait_for_udp_echo_in(t, "198.51.100.53:53", "the echo through the TUN endpoint", app)
    return t, {"direct UDP (no Oxy)": echo, "oxy TUN endpoint (Forward)": "198.51.100.53:53"}


def direct_udp_fails(netns: str, target: str) -> str | None:
    """Why oxy-client's direct load cannot reach `target` from `netns`, or None."""
    done = subprocess.run(in_netns(netns, [str(BIN / "oxy-client"), *udp_load_argv(UNUSED_PROXY, None, "direct",
                                                                                   target, 16)]),
                          capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        return None
    error = " ".join(done.stderr.split("Stack backtrace:")[0].split())[:300]
    return f"oxy-client udp --over direct --target {target} failed in {netns}: {error}"


# ---------------------------------------------------------------- the run


def main() -> int:
    global BIN, SCHEDULING
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per scenario (median reported)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds of load per measurement")
    parser.add_argument("--idle-tunnels", type=int, default=10_000, help="tunnels held for the memory scenario")
    parser.add_argument("--only", action="append", default=[], help="run only scenarios whose name contains this")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the results as a Markdown report here")
    parser.add_argument("--bin-dir", type=Path, default=Path(os.environ.get("OXY_BIN_DIR", BIN)),
                        help="where oxy, oxy-loadgen and oxy-client are (default: target/release, or OXY_BIN_DIR)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the contender to CPU 0 and the load and origin to the other CPUs")
    parser.add_argument("--workers", default="1,2",
                        help="worker counts of the scaling rows (default 1,2; more where the machine has the cores)")
    parser.add_argument("--origin-workers", type=int, default=1,
                        help="worker processes of the origin nginx (default 1; more where the scaling rows "
                             "need a faster origin)")
    parser.add_argument("--scheduling", choices=["per_thread", "work_stealing"],
                        help="`server.scheduling` of the single-worker Oxy rows (default: Oxy's own, per_thread)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the key rows only, one round of 2 s, {QUICK_IDLE_TUNNELS} idle tunnels (make bench-quick)")
    parser.add_argument("--udp-echo", type=int, help=argparse.SUPPRESS)  # the UDP echo target's own process
    opts = parser.parse_args()
    if opts.udp_echo:
        udp_echo(opts.udp_echo)
        return 0
    if opts.quick:
        opts.rounds, opts.seconds, opts.idle_tunnels = 1, 2, QUICK_IDLE_TUNNELS
        opts.only = opts.only or list(QUICK_ROWS)
    cores = os.cpu_count() or 1
    try:
        workers = sorted({int(w) for w in opts.workers.split(",")})
    except ValueError:
        parser.error(f"--workers {opts.workers!r}: a comma-separated list of worker counts")
    if not workers or workers[0] < 1 or workers[-1] > cores:
        parser.error(f"--workers {opts.workers!r}: each count from 1 to the {cores} CPUs here")
    if not 1 <= opts.origin_workers <= cores:
        parser.error(f"--origin-workers {opts.origin_workers}: from 1 to the {cores} CPUs here")
    if not opts.no_pin and cores >= 2:
        PIN.update(proxy="0", load=f"1-{cores - 1}")

    BIN = opts.bin_dir.resolve()
    SCHEDULING = opts.scheduling
    for binary in ("oxy", "oxy-loadgen", "oxy-client", "http-firewall"):
        if not (BIN / binary).exists():
            print(f"{BIN / binary} is missing: run benches/run, which builds it", file=sys.stderr)
            return 2

    def wanted(scenario: str) -> bool:
        return not opts.only or any(o in scenario for o in opts.only)

    # Every scenario, in the order run, with the peers and tools it needs (only those of
    # the wanted scenarios must be installed).
    h1 = "HTTP/1.1 reverse proxy, 1 KiB, 64 connections (wrk)"
    h2 = "HTTP/2 over TLS reverse proxy, 1 KiB, 4 connections x 100 streams (h2load)"
    cpu_h1 = (f"CPU per request at a fixed {FIXED_RATE:,} req/s: HTTP/1.1 reverse proxy, 1 KiB, "
              "50 connections (h2load --h1 --rps)")
    cpu_h2 = (f"CPU per request at a fixed {FIXED_RATE:,} req/s: HTTP/2 over TLS reverse proxy, 1 KiB, "
              "10 connections x 10 streams (h2load --rps)")
    keepalive = "HTTP/1.1 reverse proxy, 1 KiB, 1,000 keep-alive connections (wrk)"
    forward = ("HTTP/1.1 forward proxy (absolute-form), 1 KiB, 64 connections (wrk): under an egress hook "
               "(examples/egress-router) against the zero-code proxy")
    scaling = "scaling: HTTP/1.1 reverse proxy, 1 KiB, 64 connections per worker (wrk -t W), W={}"
    bulk = "tunnel bulk throughput, {} tunnel(s)"
    rate = "new tunnels per second (open, 1 byte echoed, close; 32 at a time)"
    connect_udp = ("connect-udp-{over}: CONNECT-UDP over {name}, 1200-byte datagrams echoed, "
                   "4 flows x 64 in flight (oxy-client)")
    h3_row = "h3-get: HTTP/3 reverse proxy, 1 KiB, 1 connection x 32 streams (oxy-client)"
    connect_ip = ("connect-ip-{over}: UDP in CONNECT-IP against CONNECT-UDP, both over {name}, "
                  "1200-byte datagrams echoed, 4 flows x 64 in flight (oxy-client --ip)")
    connect_ip_tcp = ("connect-ip-tcp: TCP bulk throughput over CONNECT-IP (HTTP/2 without TLS, TUN client) "
                      "against CONNECT (HTTP/1.1), 1 connection, in network namespaces (oxy-loadgen)")
    tun_forward = ("tun-forward: UDP through a protocol: tun endpoint (fixture app, IP flow hook Forward), "
                   "1200-byte datagrams echoed, 4 flows x 64 in flight (oxy-client)")
    https_interception = ("https-interception: HTTPS GETs of 1 KiB through CONNECT, intercepted (http-firewall: "
                          "minted certificate, rules, TLS re-originated) against tunnelled, 16 keep-alive "
                          "connections (oxy-loadgen)")
    udp_carriers = (("h3", "HTTP/3 (HTTP Datagrams)"), ("h2", "HTTP/2 (DATAGRAM capsules)"))
    plan = {
        "memory per idle tunnel": ["haproxy", "squid"],
        h1: ["nginx", "haproxy", "h2o", "wrk"],
        h2: ["nginx", "haproxy", "h2o", "h2load"],
        cpu_h1: ["nginx", "haproxy", "h2o", "h2load"],
        cpu_h2: ["nginx", "haproxy", "h2o", "h2load"],
        keepalive: ["nginx", "haproxy", "h2o", "wrk"],
        forward: ["wrk"],
        **{scaling.format(w): ["nginx", "haproxy", "wrk", "taskset"] for w in workers},
        **{bulk.format(tunnels): ["haproxy", "squid"] for tunnels in (1, 16)},
        rate: ["haproxy", "squid"],
        https_interception: ["nginx"],
        **{connect_udp.format(over=over, name=name): [] for over, name in udp_carriers},
        h3_row: ["nginx", "caddy"],
        **{connect_ip.format(over=over, name=name): [] for over, name in udp_carriers},
        connect_ip_tcp: [],
        tun_forward: [],
    }
    needed = {"openssl"} | {tool for scenario, tools in plan.items() if wanted(scenario) for tool in tools}
    needed |= {"taskset"} if PIN["proxy"] else set()
    for tool in sorted(needed):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is missing: run benches/run, which installs the peers", file=sys.stderr)
            return 2
    if wanted(forward) and not (BIN / "egress-router").exists():
        print(f"{BIN / 'egress-router'} is missing: run benches/run, which builds it", file=sys.stderr)
        return 2
    # Two sockets per tunnel, and the hard limit bounds every process here.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    idle_tunnels = opts.idle_tunnels
    if hard != resource.RLIM_INFINITY and 2 * idle_tunnels + 600 > hard:
        idle_tunnels = (hard - 600) // 2
        print(f"note: the hard open-files limit is {hard}; holding {idle_tunnels} idle tunnels, not {opts.idle_tunnels}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        Path("/proc/sys/net/ipv4/tcp_tw_reuse").write_text("1")
    except OSError:
        print("note: cannot enable tcp_tw_reuse; the tunnel-rate scenario may run out of ports")

    workdir = Path(tempfile.mkdtemp(prefix="oxy-bench-"))
    workdir.chmod(0o755)
    procs = Processes(workdir)
    spaces = Namespaces()
    # A plain kill also stops what was started and deletes the namespaces (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    names = ["origin", "source", "echo", "oxy_telemetry", "oxy_h1", "oxy_h2", "oxy_connect", "oxy_l4_source",
             "oxy_l4_echo", "nginx_h1", "nginx_h2", "haproxy_h1", "haproxy_h2", "haproxy_l4_source",
             "haproxy_l4_echo", "squid", "oxy_h3", "caddy_h3", "udp_echo", "origin_tls", "firewall_telemetry",
             "firewall_intercept", "firewall_tunnel", "h2o_h1", "h2o_h2", "oxy_forward", "router_forward",
             "router_telemetry", "scale_oxy", "scale_oxy_work_stealing", "scale_nginx", "scale_haproxy"]
    ports = free_ports(names)
    key, crt, pem, ca = write_certificate(workdir)
    source, echo = f"127.0.0.1:{ports['source']}", f"127.0.0.1:{ports['echo']}"
    results: list[dict] = []
    failures: list[tuple[str, str]] = []  # (scenario, why): rows that could not be measured

    def start_oxy():
        return procs.start("oxy", [str(BIN / "oxy"), "--config", str(oxy_config(workdir, ports, crt, key))],
                           [ports["oxy_h1"], ports["oxy_connect"], ports["oxy_l4_echo"], ports["oxy_h3"]])

    def start_origin():
        return procs.start("origin", ["nginx", "-c", str(nginx_config(workdir, ports, crt, key, True, opts.origin_workers))],
                           [ports["origin"]], role="load")

    def start_firewall():
        return procs.start("firewall", [str(BIN / "http-firewall"), "--config", str(firewall_config(workdir, ports, ca))],
                           [ports["firewall_intercept"], ports["firewall_tunnel"]])

    def start_nginx():
        return procs.start("nginx", ["nginx", "-c", str(nginx_config(workdir, ports, crt, key, False))],
                           [ports["nginx_h1"]])

    def start_haproxy():
        return procs.start("haproxy", ["haproxy", "-db", "-f", str(haproxy_config(workdir, ports, pem, idle_tunnels + 20))],
                           [ports["haproxy_h1"], ports["haproxy_l4_echo"]])

    def start_squid():
        return procs.start("squid", ["squid", "-N", "-f", str(squid_config(workdir, ports))], [ports["squid"]])

    def start_h2o():
        return procs.start("h2o", ["h2o", "-c", str(h2o_config(workdir, ports, crt, key))],
                           [ports["h2o_h1"], ports["h2o_h2"]])

    def start_egress_router():
        return procs.start("egress-router", [str(BIN / "egress-router"), "--config",
                                             str(egress_router_config(workdir, ports))], [ports["router_forward"]])

    def start_caddy():
        # One Go scheduler thread, like Oxy's one worker thread; its state stays in the work dir.
        home = str(workdir / "caddy")
        return procs.start("caddy", ["caddy", "run", "--adapter", "caddyfile",
                                     "--config", str(caddy_config(workdir, ports, crt, key))], [ports["caddy_h3"]],
                           env={"GOMAXPROCS": "1", "HOME": home, "XDG_DATA_HOME": home, "XDG_CONFIG_HOME": home})

    def record(scenario: str, contender: str, samples: list[dict]) -> None:
        medians = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        if len(samples) > 1 and medians.get("req/s"):
            # How steady the rounds were: their spread over the median.
            rates = [s["req/s"] for s in samples]
            medians["req/s spread %"] = 100 * (max(rates) - min(rates)) / medians["req/s"]
        results.append({"scenario": scenario, "contender": contender, "rounds": len(samples), **medians})
        shown = ", ".join(f"{k} {v:,.2f}" for k, v in medians.items())
        print(f"  {contender:<24} {shown}", flush=True)

    starters = {"origin": start_origin, "firewall": start_firewall, "oxy": start_oxy, "nginx": start_nginx,
                "haproxy": start_haproxy, "squid": start_squid, "caddy": start_caddy, "h2o": start_h2o,
                "egress-router": start_egress_router}
    started: set[str] = set()

    def with_cpu(process: str | None, measure, how) -> dict:
        """measure(how), and, for a process named in `procs` whose measurement counts
        `requests` (or `tunnels`), its CPU seconds (user + system, its workers included)
        per 100k of them."""
        proc = procs.by_name.get(process) if process else None
        before = cpu_seconds(proc.pid) if proc else 0.0
        out = measure(how)
        for counted, label in (("requests", "CPU s/100k req"), ("tunnels", "CPU s/100k tunnels")):
            count = out.pop(counted, None)
            if proc and count:
                out[label] = (cpu_seconds(proc.pid) - before) / count * 1e5
        return out

    def alternate(scenario: str, contenders: dict, measure, peers: list[str],
                  cpu: dict[str, str] | None = None) -> None:
        """Measures each contender in turn, `opts.rounds` times; `cpu` names the process
        of each contender whose CPU time per request is reported."""
        if scenario not in plan:
            raise KeyError(f"scenario {scenario!r} is missing from the plan in main()")
        if not wanted(scenario):
            return
        for peer in peers:  # started once, when a wanted scenario first needs it
            if peer not in started:
                starters[peer]()
                started.add(peer)
        print(f"{scenario}", flush=True)
        samples: dict[str, list[dict]] = {name: [] for name in contenders}
        try:
            for _ in range(opts.rounds):
                for name, how in contenders.items():
                    try:
                        samples[name].append(with_cpu((cpu or {}).get(name), measure, how))
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        raise RuntimeError(f"{name}: {e}") from e
        except RuntimeError as e:
            # One failed measurement fails its row, shown in the report, not the run.
            print(f"  FAILED: {e}", flush=True)
            failures.append((scenario, str(e)))
            return
        for name in contenders:
            record(scenario, name, samples[name])

    try:
        procs.start("targets", [str(BIN / "oxy-loadgen"), "serve", "--source", source, "--echo", echo],
                    [ports["source"], ports["echo"]], role="load")
        procs.start("udp-echo", [sys.executable, str(Path(__file__).resolve()), "--udp-echo", str(ports["udp_echo"])],
                    [], udp_echo=ports["udp_echo"], role="load")

        through = {
            "oxy CONNECT": {"source": {"port": ports["oxy_connect"], "connect": source},
                            "echo": {"port": ports["oxy_connect"], "connect": echo}, "start": start_oxy},
            "oxy tcp endpoint": {"source": {"port": ports["oxy_l4_source"]},
                                 "echo": {"port": ports["oxy_l4_echo"]}, "start": start_oxy},
            "haproxy tcp mode": {"source": {"port": ports["haproxy_l4_source"]},
                                 "echo": {"port": ports["haproxy_l4_echo"]}, "start": start_haproxy},
            "squid CONNECT": {"source": {"port": ports["squid"], "connect": source},
                              "echo": {"port": ports["squid"], "connect": echo}, "start": start_squid},
        }

        # Memory first, each peer fresh, so earlier load does not hide or add memory.
        if wanted("memory per idle tunnel"):
            print(f"memory per idle tunnel ({idle_tunnels} tunnels, one byte echoed each, then idle)", flush=True)
            for name in ("oxy CONNECT", "haproxy tcp mode", "squid CONNECT"):
                how = through[name]
                proc = how["start"]()
                time.sleep(1)
                pids = [proc.pid] + [int(p) for p in subprocess.run(
                    ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()]
                sample = loadgen(["idle", *route(how, "echo"), "--count", str(idle_tunnels),
                                  "--pids", ",".join(map(str, pids))], 300)
                if sample["failed"]:
                    print(f"  note: {sample['failed']} tunnels failed to open through {name}")
                record(f"memory per idle tunnel ({idle_tunnels})", name, [{"KiB/tunnel": sample["kib_per_tunnel"]}])
                procs.stop(proc)
                procs.running = [(n, p) for n, p in procs.running if p is not proc]

        secs = opts.seconds

        http_peers = ["origin", "oxy", "nginx", "haproxy", "h2o"]
        each_own = {name: name for name in ("oxy", "nginx", "haproxy", "h2o")}  # contender -> its process
        plain = {name: ports[f"{name}_h1"] for name in each_own}
        tls = {name: ports[f"{name}_h2"] for name in each_own}
        alternate(h1, plain, lambda port: wrk(port, secs), http_peers, each_own)
        alternate(h2, tls, lambda port: h2load(port, secs), http_peers, each_own)
        alternate(cpu_h1, plain, lambda port: h2load(port, secs, rate=FIXED_RATE, h1=True), http_peers, each_own)
        alternate(cpu_h2, tls, lambda port: h2load(port, secs, rate=FIXED_RATE), http_peers, each_own)
        alternate(keepalive, plain, lambda port: wrk(port, secs, connections=1000), http_peers, each_own)

        def forwarded(port: int) -> dict:
            """wrk's figures, and how many connections the origin accepted per 1,000 requests."""
            before = origin_accepts(ports["origin"])
            out = wrk(port, secs, script=absolute_form_script(workdir, ports))
            out["origin conns / 1k req"] = 1000 * (origin_accepts(ports["origin"]) - before) / out["requests"]
            return out

        alternate(forward, {"zero-code proxy (oxy binary)": ports["oxy_forward"],
                            "oxy egress-router": ports["router_forward"]}, forwarded,
                  ["origin", "oxy", "egress-router"], {"zero-code proxy (oxy binary)": "oxy",
                                                       "oxy egress-router": "egress-router"})
        if wanted(forward):
            print(f"  egress-router's pool: {egress_pool_counts(ports['router_telemetry'])}", flush=True)

        for w in workers:
            scenario = scaling.format(w)
            if not wanted(scenario):
                continue
            # W workers on CPUs 0..W-1 and the load on the rest, or all of them on every CPU
            # where fewer than W CPUs would be left to the load (a 2-core machine at W=2).
            spread = {"proxy": f"0-{w - 1}", "load": f"{w}-{cores - 1}"} if 2 * w <= cores else \
                {"proxy": f"0-{cores - 1}", "load": f"0-{cores - 1}"}
            if "origin" not in started:  # before the mark: it outlives this row's processes
                starters["origin"]()
                started.add("origin")
            saved = dict(PIN)
            if PIN["proxy"]:
                PIN.update(spread)
                # The origin, started on the load's CPUs, leaves the W workers' CPUs too.
                repin(procs.by_name["origin"].pid, PIN["load"])
            mark = len(procs.running)
            try:
                configs = scaled_configs(workdir, ports, w)
                argv = {"oxy": [str(BIN / "oxy"), "--config"], "oxy work_stealing": [str(BIN / "oxy"), "--config"],
                        "nginx": ["nginx", "-c"], "haproxy": ["haproxy", "-db", "-f"]}
                for name, (config, port) in configs.items():
                    procs.start(f"{name}-w", [*argv[name], str(config)], [port])
                alternate(scenario, {name: port for name, (_, port) in configs.items()},
                          lambda port: per_worker(wrk(port, secs, connections=64 * w, threads=w), w),
                          ["origin"], {name: f"{name}-w" for name in configs})
            finally:
                procs.stop_from(mark)
                PIN.clear()
                PIN.update(saved)
                if PIN["load"]:
                    repin(procs.by_name["origin"].pid, PIN["load"])
        add_scaling_ratios(results, [scaling.format(w) for w in workers])
        with_direct = {"direct (no proxy)": {"source": {"port": ports["source"]}}, **through}
        for tunnels in (1, 16):
            alternate(bulk.format(tunnels), with_direct,
                      lambda how: {"Gbit/s": loadgen(["throughput", *route(how, "source"), "--tunnels",
                                                      str(tunnels), "--seconds", str(secs)], secs + 60)["gbit_per_s"]},
                      ["oxy", "haproxy", "squid"])
        def tunnels_per_s(how) -> dict:
            out = loadgen(["rate", *route(how, "echo"), "--seconds", str(secs)], secs + 60)
            return {"tunnels/s": out["tunnels_per_s"], "tunnels": out["tunnels"]}

        # The load side (32 loops opening tunnels, and the echo target) shares one CPU and
        # may be what limits the rate: the contenders' CPU time per tunnel says what each
        # costs whatever the rate.
        alternate(rate, through, tunnels_per_s, ["oxy", "haproxy", "squid"],
                  {"oxy CONNECT": "oxy", "oxy tcp endpoint": "oxy", "haproxy tcp mode": "haproxy",
                   "squid CONNECT": "squid"})

        # TLS interception's cost: the same requests, the same http-firewall process, each
        # connection's TLS either ended and re-originated by Oxy or tunnelled to the origin.
        origin_tls = f"localhost:{ports['origin_tls']}"
        alternate(https_interception,
                  {"CONNECT tunnelled (http-firewall)": ports["firewall_tunnel"],
                   "oxy intercepted (http-firewall)": ports["firewall_intercept"]},
                  lambda port: {"req/s": loadgen(["https", "--to", f"127.0.0.1:{port}", "--connect", origin_tls,
                                                  "--host", "localhost", "--ca", str(workdir / "both-cas.crt"),
                                                  "--connections", "16", "--seconds", str(secs)],
                                                 secs + 60)["requests_per_s"]},
                  ["origin", "firewall"])

        sized = Sized(secs)
        oxy_https, udp_target = f"https://localhost:{ports['oxy_h3']}", f"127.0.0.1:{ports['udp_echo']}"

        def datagrams(over: str, ip: bool = False) -> dict:
            key = f"udp {over}" + (" ip" if ip else "")
            return datagram_rates(sized(key, 1000, lambda n: udp_load(oxy_https, ca, over, udp_target, n, secs, ip)))

        for over, name in udp_carriers:
            alternate(connect_udp.format(over=over, name=name),
                      {"direct (no proxy)": "direct", f"oxy CONNECT-UDP over {over}": over}, datagrams, ["oxy"])

        def gets(port: int) -> dict:
            out = sized(f"get {port}", 2000, lambda n: h3_get(f"https://localhost:{port}/1k", ca, n, secs))
            return {"req/s": out["requests_per_s"], "failed": out["failed"], "requests": out["ok"]}

        alternate(h3_row, {"oxy": ports["oxy_h3"], "caddy": ports["caddy_h3"]}, gets, ["origin", "oxy", "caddy"],
                  {"oxy": "oxy", "caddy": "caddy"})

        # Layer 3. CONNECT-IP carrying the same UDP echo load as CONNECT-UDP, through the
        # same Oxy endpoint and HTTP version; Oxy's CONNECT-UDP is the baseline here.
        for over, name in udp_carriers:
            alternate(connect_ip.format(over=over, name=name),
                      {f"CONNECT-UDP over {over}": (over, False), f"oxy CONNECT-IP over {over}": (over, True)},
                      lambda how: datagrams(*how), ["oxy"])

        # TCP through a TUN device and CONNECT-IP, and the TUN on-ramp: root only, each in
        # namespaces of its own that are deleted, with everything started in them, at its end.
        for scenario, start in ((connect_ip_tcp, start_connect_ip_tcp), (tun_forward, start_tun_forward)):
            if not wanted(scenario):
                continue
            why_not = layer3_unavailable()
            if not why_not and scenario == tun_forward and not (BIN / "fixture-app").exists():
                why_not = f"needs {BIN / 'fixture-app'} (cargo build --release -p fixture-app)"
            if why_not:
                print(f"{scenario}\n  skipped: {why_not}", flush=True)
                continue
            mark = len(procs.running)
            try:
                netns, contenders = start(procs, spaces, workdir)
                if scenario == connect_ip_tcp:
                    alternate(scenario, contenders,
                              lambda how: {"Gbit/s": loadgen(["throughput", *how, "--tunnels", "1", "--seconds",
                                                              str(secs)], secs + 60, netns)["gbit_per_s"]}, [])
                elif why_not := direct_udp_fails(netns, contenders["oxy TUN endpoint (Forward)"]):
                    print(f"{scenario}\n  skipped: {why_not}", flush=True)
                else:
                    alternate(scenario, contenders,
                              lambda target: datagram_rates(sized(f"tun {target}", 1000, lambda n: udp_load(
                                  UNUSED_PROXY, None, "direct", target, n, secs, netns=netns))), [])
            finally:
                procs.stop_from(mark)
                spaces.delete_all()
    finally:
        procs.stop_all()
        spaces.delete_all()

    print_ratios(results)
    for scenario, why in failures:
        print(f"FAILED: {scenario}: {why}")
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
    if opts.markdown:
        opts.markdown.write_text(markdown_report(results, failures, opts, idle_tunnels))
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


# The fixed request rate of the CPU-per-request rows, and what --quick (make bench-quick) runs.
FIXED_RATE = 10_000
QUICK_IDLE_TUNNELS = 2_000
QUICK_ROWS = ("memory per idle tunnel", "1 KiB, 64 connections (wrk)", "4 connections x 100 streams",
              "CPU per request", "new tunnels per second")

# Shown in the tables, left out of the ratios (a share of zero has no ratio worth reading).
NOT_A_RATIO = {"lost %", "failed", "origin conns / 1k req", "req/s spread %", "timeouts"}


def ratios(results: list[dict]) -> list[tuple[str, str, str, str, float]]:
    """(scenario, Oxy contender, peer, metric, ratio) for every Oxy row against every peer."""
    by_scenario: dict[str, dict[str, dict]] = {}
    for r in results:
        by_scenario.setdefault(r["scenario"], {})[r["contender"]] = r
    found = []
    for scenario, rows in by_scenario.items():
        for oxy_name in [n for n in rows if n.startswith("oxy")]:
            for peer, peer_row in rows.items():
                if peer.startswith("oxy"):
                    continue
                for metric, value in rows[oxy_name].items():
                    if metric in ("scenario", "contender", "rounds") or metric in NOT_A_RATIO \
                            or not peer_row.get(metric):
                        continue
                    found.append((scenario, oxy_name, peer, metric, value / peer_row[metric]))
    return found


def print_ratios(results: list[dict]) -> None:
    print("\nRatios Oxy/peer (higher is better for rates, throughput and scaling, lower for latency, memory and CPU):")
    for scenario, oxy_name, peer, metric, ratio in ratios(results):
        print(f"  {scenario} | {oxy_name} / {peer} | {metric}: {ratio:.2f}x")


def version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def markdown_report(results: list[dict], failures: list[tuple[str, str]], opts, idle_tunnels: int) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    commit = version_of(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    argv = " ".join(["benches/run", *sys.argv[1:]])
    out = [
        "# Benchmark results",
        "",
        f"Made by `{argv}` at commit `{commit}` on {time.strftime('%Y-%m-%d')}.",
        "",
        f"- Machine: {os.cpu_count()} cores ({cpu}), kernel {os.uname().release}",
        f"- Oxy: {BIN.name} build, `server.worker_threads: 1`, `server.scheduling: {SCHEDULING or 'per_thread'}`, log level warn (no access log)",
        f"- nginx: {version_of(['nginx', '-v'])}; `worker_processes 1`, access_log off, upstream keepalive",
        f"- HAProxy: {version_of(['haproxy', '-v'])}; `nbthread 1`, `http-reuse always`, `option splice-auto` (TCP)",
        f"- Squid: {version_of(['squid', '-v'])}; one process, no cache, access_log none",
        f"- Caddy: {version_of(['caddy', 'version'])}; `GOMAXPROCS=1`, HTTP/3 on, logs at ERROR",
        f"- h2o: {version_of(['h2o', '--version'])}; `num-threads: 1`, no access log (this version has no HTTP/3)",
        f"- Load: {version_of(['wrk', '-v'])}; {version_of(['h2load', '--version'])}; oxy-loadgen (benches/loadgen); "
        "oxy-client (tools/oxy-client) for HTTP/3, CONNECT-UDP, CONNECT-IP and the TUN endpoint, against a UDP echo in Python "
        "(recvmmsg/sendmmsg, one process)",
        *([f"- Layer 3: connect-ip-tcp and tun-forward run in network namespaces of their own (a veth pair "
            "between proxy and client sides for connect-ip-tcp; one namespace for tun-forward); Oxy and the "
            f"fixture app (integration-tests/fixture-app, {BIN.name} build) with `server.worker_threads: 1`"]
          if any(r["scenario"].startswith(("connect-ip-tcp", "tun-forward")) for r in results) else []),
        f"- {opts.rounds} alternating rounds of {opts.seconds} s per scenario; medians shown. " + (
            f"The contender under measurement runs on CPU {PIN['proxy']} (`taskset`), the load generators, "
            f"origin and targets on CPUs {PIN['load']}; the scaling rows spread W workers as they say. "
            if PIN["proxy"] else "Nothing is pinned: the load generator, the target and the proxy share the CPUs. ") +
        "`CPU s/100k req` (`tunnels`) is the contender's user + system time (all its processes, from /proc) per "
        "100,000 requests answered (tunnels opened and closed).",
        "",
    ]
    by_scenario: dict[str, list[dict]] = {}
    for r in results:
        by_scenario.setdefault(r["scenario"], []).append(r)
    for scenario, rows in by_scenario.items():
        metrics = [k for k in rows[0] if k not in ("scenario", "contender", "rounds")]
        out += [f"## {scenario}", "", "| contender | " + " | ".join(metrics) + " |",
                "|---|" + "---:|" * len(metrics)]
        for r in rows:
            out.append(f"| {r['contender']} | " + " | ".join(f"{r[m]:,.2f}" for m in metrics) + " |")
        out.append("")
    if failures:
        out += ["## Rows that could not be measured", ""]
        out += [f"- {scenario}: {why.splitlines()[0]}" for scenario, why in failures]
        out.append("")
    findings = Path(__file__).with_name("findings.md")
    if findings.exists():
        out += [findings.read_text().rstrip(), ""]
    out += ["## Ratios Oxy/peer", "", "Higher is better for rates, throughput and scaling (`x first W`), lower for "
            "latency, memory and CPU.", "",
            "| scenario | Oxy / peer | metric | ratio |", "|---|---|---|---:|"]
    out += [f"| {sc} | {oxy} / {peer} | {metric} | {ratio:.2f} |" for sc, oxy, peer, metric, ratio in ratios(results)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
