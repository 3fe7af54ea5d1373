#!/usr/bin/env python3
"""Oxy's side-by-side benchmarks: starts Oxy and its peers (nginx, HAProxy, Squid) on
loopback with equivalent settings, drives the same load against each in alternation
(A B A B, several rounds) and prints a table of medians and ratios Oxy/peer.

Run through `benches/run` (or `make bench`), which installs the peers and builds the
release binaries first. Everything started here is stopped on exit, even on failure.
"""

import argparse
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
RELEASE = ROOT / "target" / "release"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, what: str, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


class Processes:
    """Every process the run started, stopped in reverse order on exit."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], ports: list[int]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append((name, proc))
        for port in ports:
            try:
                wait_for_port(port, name)
            except RuntimeError:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not start; its log ends with:\n{tail}")
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
        for _, proc in reversed(self.running):
            self.stop(proc)
        self.running.clear()


def run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-1500:]}")
    return done.stdout


# ---------------------------------------------------------------- configurations


def write_certificate(workdir: Path) -> tuple[Path, Path, Path]:
    key, crt, pem = workdir / "bench.key", workdir / "bench.crt", workdir / "bench.pem"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(crt)], 30)
    pem.write_text(crt.read_text() + key.read_text())
    return key, crt, pem


def oxy_config(workdir: Path, ports: dict, crt: Path, key: Path) -> Path:
    origin = f"http://127.0.0.1:{ports['origin']}"
    config = {
        "server": {"worker_threads": 1, "shutdown_timeout": "1s"},
        "telemetry": {"listen": f"127.0.0.1:{ports['oxy_telemetry']}", "log": {"level": "warn"}},
        "egress": {"allow": ["127.0.0.0/8"]},
        "endpoints": [
            {"name": "reverse", "listen": [f"127.0.0.1:{ports['oxy_h1']}"], "http": {"upstream": origin}},
            {"name": "reverse-tls", "listen": [f"127.0.0.1:{ports['oxy_h2']}"], "http": {"upstream": origin},
             "tls": {"enabled": True, "certificates": [{"chain": str(crt), "key": str(key)}]}},
            {"name": "proxy", "listen": [f"127.0.0.1:{ports['oxy_connect']}"]},
            {"name": "l4-source", "protocol": "tcp", "listen": [f"127.0.0.1:{ports['oxy_l4_source']}"],
             "tcp": {"target": f"127.0.0.1:{ports['source']}"}},
            {"name": "l4-echo", "protocol": "tcp", "listen": [f"127.0.0.1:{ports['oxy_l4_echo']}"],
             "tcp": {"target": f"127.0.0.1:{ports['echo']}"}},
        ],
    }
    path = workdir / "oxy.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def nginx_config(workdir: Path, ports: dict, crt: Path, key: Path, origin: bool) -> Path:
    name = "origin" if origin else "nginx"
    prefix = workdir / name
    prefix.mkdir(exist_ok=True)
    prefix.chmod(0o777)  # nginx's workers run unprivileged
    common = f"""
worker_processes 1;
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
    if origin:
        (prefix / "www").mkdir(exist_ok=True)
        (prefix / "www" / "1k").write_bytes(b"x" * 1024)
        (prefix / "www").chmod(0o755)
        body = f"""
  server {{
    listen 127.0.0.1:{ports['origin']};
    location / {{ root {prefix}/www; }}
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


# ---------------------------------------------------------------- measurements


def wrk(port: int, seconds: int) -> dict:
    out = run(["wrk", "-t1", "-c64", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/1k"], seconds + 30)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses on port {port}")
    return {"req/s": rps, "p50 ms": latency("50"), "p99 ms": latency("99")}


def h2load(port: int, seconds: int) -> dict:
    out = run(["h2load", "-c4", "-m100", "-D", str(seconds), "--warm-up-time=1",
               f"https://127.0.0.1:{port}/1k"], seconds + 60)
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if status and (int(status.group(3)) or int(status.group(4))):
        raise RuntimeError(f"h2load saw error responses on port {port}: {status.group(0)}")
    if "h2" not in out:
        raise RuntimeError(f"h2load did not negotiate h2 on port {port}")
    return {"req/s": rps}


def loadgen(args: list[str], timeout: float) -> dict:
    return json.loads(run([str(RELEASE / "oxy-loadgen"), *args], timeout))


def route(contender: dict, target: str) -> list[str]:
    """loadgen arguments reaching `target` (source or echo) through a contender."""
    via = contender[target]
    argv = ["--to", f"127.0.0.1:{via['port']}"]
    if via.get("connect"):
        argv += ["--connect", via["connect"]]
    return argv


# ---------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per scenario (median reported)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds of load per measurement")
    parser.add_argument("--idle-tunnels", type=int, default=10_000, help="tunnels held for the memory scenario")
    parser.add_argument("--only", action="append", default=[], help="run only scenarios whose name contains this")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the results as a Markdown report here")
    opts = parser.parse_args()

    for tool in ("nginx", "haproxy", "squid", "wrk", "h2load", "openssl"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is missing: run benches/run, which installs the peers", file=sys.stderr)
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
    names = ["origin", "source", "echo", "oxy_telemetry", "oxy_h1", "oxy_h2", "oxy_connect", "oxy_l4_source",
             "oxy_l4_echo", "nginx_h1", "nginx_h2", "haproxy_h1", "haproxy_h2", "haproxy_l4_source",
             "haproxy_l4_echo", "squid"]
    ports = {name: free_port() for name in names}
    key, crt, pem = write_certificate(workdir)
    source, echo = f"127.0.0.1:{ports['source']}", f"127.0.0.1:{ports['echo']}"
    results: list[dict] = []

    def start_oxy():
        return procs.start("oxy", [str(RELEASE / "oxy"), "--config", str(oxy_config(workdir, ports, crt, key))],
                           [ports["oxy_h1"], ports["oxy_connect"], ports["oxy_l4_echo"]])

    def start_nginx():
        return procs.start("nginx", ["nginx", "-c", str(nginx_config(workdir, ports, crt, key, False))],
                           [ports["nginx_h1"]])

    def start_haproxy():
        return procs.start("haproxy", ["haproxy", "-db", "-f", str(haproxy_config(workdir, ports, pem, idle_tunnels + 20))],
                           [ports["haproxy_h1"], ports["haproxy_l4_echo"]])

    def start_squid():
        return procs.start("squid", ["squid", "-N", "-f", str(squid_config(workdir, ports))], [ports["squid"]])

    def wanted(scenario: str) -> bool:
        return not opts.only or any(o in scenario for o in opts.only)

    def record(scenario: str, contender: str, samples: list[dict]) -> None:
        medians = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        results.append({"scenario": scenario, "contender": contender, "rounds": len(samples), **medians})
        shown = ", ".join(f"{k} {v:,.2f}" for k, v in medians.items())
        print(f"  {contender:<22} {shown}", flush=True)

    def alternate(scenario: str, contenders: dict, measure) -> None:
        if not wanted(scenario):
            return
        print(f"{scenario}", flush=True)
        samples: dict[str, list[dict]] = {name: [] for name in contenders}
        for _ in range(opts.rounds):
            for name, how in contenders.items():
                samples[name].append(measure(how))
        for name in contenders:
            record(scenario, name, samples[name])

    try:
        procs.start("origin", ["nginx", "-c", str(nginx_config(workdir, ports, crt, key, True))], [ports["origin"]])
        procs.start("targets", [str(RELEASE / "oxy-loadgen"), "serve", "--source", source, "--echo", echo],
                    [ports["source"], ports["echo"]])

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

        start_oxy(), start_nginx(), start_haproxy(), start_squid()
        secs = opts.seconds

        alternate("HTTP/1.1 reverse proxy, 1 KiB, 64 connections (wrk)",
                  {"oxy": ports["oxy_h1"], "nginx": ports["nginx_h1"], "haproxy": ports["haproxy_h1"]},
                  lambda port: wrk(port, secs))
        alternate("HTTP/2 over TLS reverse proxy, 1 KiB, 4 connections x 100 streams (h2load)",
                  {"oxy": ports["oxy_h2"], "nginx": ports["nginx_h2"], "haproxy": ports["haproxy_h2"]},
                  lambda port: h2load(port, secs))
        with_direct = {"direct (no proxy)": {"source": {"port": ports["source"]}}, **through}
        for tunnels in (1, 16):
            alternate(f"tunnel bulk throughput, {tunnels} tunnel(s)", with_direct,
                      lambda how: {"Gbit/s": loadgen(["throughput", *route(how, "source"), "--tunnels",
                                                      str(tunnels), "--seconds", str(secs)], secs + 60)["gbit_per_s"]})
        alternate("new tunnels per second (open, 1 byte echoed, close; 32 at a time)", through,
                  lambda how: {"tunnels/s": loadgen(["rate", *route(how, "echo"), "--seconds", str(secs)],
                                                    secs + 60)["tunnels_per_s"]})
    finally:
        procs.stop_all()

    print_ratios(results)
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
    if opts.markdown:
        opts.markdown.write_text(markdown_report(results, opts, idle_tunnels))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


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
                    if metric in ("scenario", "contender", "rounds") or not peer_row.get(metric):
                        continue
                    found.append((scenario, oxy_name, peer, metric, value / peer_row[metric]))
    return found


def print_ratios(results: list[dict]) -> None:
    print("\nRatios Oxy/peer (higher is better for rates and throughput, lower for latency and memory):")
    for scenario, oxy_name, peer, metric, ratio in ratios(results):
        print(f"  {scenario} | {oxy_name} / {peer} | {metric}: {ratio:.2f}x")


def version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def markdown_report(results: list[dict], opts, idle_tunnels: int) -> str:
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
        f"- Oxy: release build, `server.worker_threads: 1`, log level warn (no access log)",
        f"- nginx: {version_of(['nginx', '-v'])}; `worker_processes 1`, access_log off, upstream keepalive",
        f"- HAProxy: {version_of(['haproxy', '-v'])}; `nbthread 1`, `http-reuse always`, `option splice-auto` (TCP)",
        f"- Squid: {version_of(['squid', '-v'])}; one process, no cache, access_log none",
        f"- Load: {version_of(['wrk', '-v'])}; {version_of(['h2load', '--version'])}; oxy-loadgen (benches/loadgen)",
        f"- {opts.rounds} alternating rounds of {opts.seconds} s per scenario; medians shown. "
        "Everything shares the 2 cores: the load generator, the target and the proxy.",
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
    findings = Path(__file__).with_name("findings.md")
    if findings.exists():
        out += [findings.read_text().rstrip(), ""]
    out += ["## Ratios Oxy/peer", "", "Higher is better for rates and throughput, lower for latency and memory.", "",
            "| scenario | Oxy / peer | metric | ratio |", "|---|---|---|---:|"]
    out += [f"| {sc} | {oxy} / {peer} | {metric} | {ratio:.2f} |" for sc, oxy, peer, metric, ratio in ratios(results)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
