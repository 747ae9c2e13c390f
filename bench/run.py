"""The side-by-side benchmark suite (`make bench`): network servers and in-process micro-benchmarks.

Network workloads: each server runs in a fresh process pinned to CPU 0, the client (the Rust load
generator, wrk for HTTP, a Python client for TLS) pinned to CPU 1. The "connection per request"
workloads open a new connection for each 1 KiB echo and close it with a FIN or an RST (see
crates/ferroloop-bench/src/bin/loadgen.rs for how their TIME_WAIT stays off the ephemeral ports); a
loop under which client connections fail is reported as such, not measured. The real-app workload is
uvicorn (httptools) serving a one-route Starlette app over 50 keep-alive connections (uvicorn and
Starlette are pinned in requirements-integration.txt, which every venv installs). Within each round
every loop runs once, in rotating order; each figure is the median over rounds, and each ratio is
computed within a round, then its median taken. The headline metric is server CPU time per request
(from /proc/PID/task/*/schedstat), which a noisy machine disturbs far less than requests per second.
"reference" is a Rust server with no Python: the ceiling on this machine.

Writes bench/results/latest.{md,json,png} and the README's performance section.

    python bench/run.py [--rounds 5] [--seconds 2] [--only WORKLOAD ...] [--no-readme]
"""

import argparse
import contextlib
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
RESULTS = ROOT / "bench" / "results"
LOOPS = ("reference", "asyncio", "uvloop", "rloop", "ferroloop")
KIB = 1024

# name, server workload, message size (None: HTTP)
WORKLOADS = [
    ("echo sock_recv/sock_sendall 1 KiB", "sock", KIB),
    ("echo sock_recv/sock_sendall 10 KiB", "sock", 10 * KIB),
    ("echo sock_recv/sock_sendall 100 KiB", "sock", 100 * KIB),
    ("echo streams 1 KiB", "streams", KIB),
    ("echo streams 10 KiB", "streams", 10 * KIB),
    ("echo streams 100 KiB", "streams", 100 * KIB),
    ("echo Protocol 1 KiB", "protocol", KIB),
    ("echo Protocol 10 KiB", "protocol", 10 * KIB),
    ("echo Protocol 100 KiB", "protocol", 100 * KIB),
    ("Unix Protocol echo 1 KiB", "unix", KIB),
    ("connection per request, 1 KiB, client closes (FIN)", "connect-graceful", KIB),
    ("connection per request, 1 KiB, client resets (RST)", "connect-reset", KIB),
    ("HTTP/1.1 keep-alive (httptools)", "http", None),
    ("uvicorn + Starlette app, HTTP/1.1 keep-alive", "uvicorn", None),
    ("TLS echo 1 KiB", "tls", KIB),
]
CONNS = 10
# The real app is measured as its issue saw it: 50 keep-alive connections, so that every loop
# iteration has many ready sockets and the loop's fairness rule comes into play.
CONNS_FOR = {"uvicorn": 50}
HTTP = ("http", "uvicorn")  # served to wrk (or loadgen --http); the reference answers them alike


def cpu_ns(pid):
    """CPU time of every thread of `pid`, in nanoseconds."""
    total = 0
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def sys_ticks(pid):
    """System (kernel) time of every thread of `pid`, in clock ticks (the kernel samples it at each
    tick, so it is a statistical split of the CPU time `cpu_ns` counts exactly)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12])  # stime, the 15th field of the whole line


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process pinned to CPU 0; `unsupported` holds the reason if it would not start."""

    def __init__(self, loop, workload, address):
        self.unsupported = None
        if loop == "reference":
            target = ["--unix", address] if workload == "unix" else ["--tcp", address]
            cmd = [str(BIN / "refserver"), *target] + (["--http"] if workload in HTTP else [])
            if workload == "tls":
                self.proc = None
                self.unsupported = "no TLS in the reference server"
                return
        else:
            cmd = [sys.executable, str(ROOT / "bench" / "server.py"), loop, workload, address]
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            self.proc.wait(timeout=10)
            err = self.proc.stderr.read().strip().splitlines()
            self.unsupported = err[-1] if err else f"exited with {self.proc.returncode}"
            self.proc = None

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def run_client(workload, address, size, seconds):
    conns = CONNS_FOR.get(workload, CONNS)
    if workload in HTTP and shutil.which("wrk"):
        seconds = max(1, round(seconds))  # wrk takes whole seconds
        out = subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", f"http://{address}/"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

        def pct(p):
            m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
            value, unit = float(m.group(1)), m.group(2)
            return value * {"us": 1, "ms": 1e3, "s": 1e6}[unit]

        return {"requests": rps * seconds, "seconds": seconds, "p50_us": pct(50), "p99_us": pct(99), "errors": 0}
    if workload == "tls":
        host, port = address.rsplit(":", 1)
        cmd = [sys.executable, str(ROOT / "bench" / "tls_client.py"), host, port, str(conns), str(size), str(seconds)]
    else:
        target = ["--unix", address] if workload == "unix" else ["--tcp", address]
        cmd = [str(BIN / "loadgen"), *target, "--conns", str(conns), "--seconds", str(seconds)]
        cmd += ["--http"] if workload in HTTP else ["--size", str(size)]
        if workload.startswith("connect-"):
            cmd += ["--per-connection", workload.removeprefix("connect-")]
    out = subprocess.run(
        ["taskset", "-c", "1", *cmd], check=False, capture_output=True, text=True, timeout=seconds + 30
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(loop, workload, size, seconds, tmp):
    address = str(tmp / f"{loop}.sock") if workload == "unix" else f"127.0.0.1:{free_port()}"
    server = Server(loop, workload, address)
    if server.unsupported:
        return {"unsupported": server.unsupported}
    try:
        run_client(workload, address, size, 0.3)  # warm-up: connections, caches, JIT-free but lazy imports
        before, sys_before = cpu_ns(server.proc.pid), sys_ticks(server.proc.pid)
        result = run_client(workload, address, size, seconds)
        used = cpu_ns(server.proc.pid) - before
        kernel = (sys_ticks(server.proc.pid) - sys_before) / os.sysconf("SC_CLK_TCK")
    except (subprocess.SubprocessError, ValueError, AttributeError, json.JSONDecodeError, IndexError) as exc:
        return {"unsupported": f"client failed: {exc!r}"[:200]}
    finally:
        server.close()
    n = result["requests"]
    if result.get("errors"):
        return {"unsupported": f"{result['errors']} client connections failed"}
    if n == 0 or used == 0:
        return {"unsupported": f"no requests completed ({result.get('errors', 0)} client errors)"}
    return {
        "rps": result["requests"] / result["seconds"],
        "p50_us": result["p50_us"],
        "p99_us": result["p99_us"],
        "cpu_us_per_req": used / n / 1e3,
        "sys_us_per_req": kernel / n * 1e6,
    }


def idle_memory(loop, tmp, count=10_000):
    """Server RSS growth (KiB) with `count` idle connections open."""
    address = f"127.0.0.1:{free_port()}"
    server = Server(loop, "protocol", address)
    if server.unsupported:
        return {"unsupported": server.unsupported}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 1000)), hard))
    host, port = address.rsplit(":", 1)
    socks = []
    try:
        time.sleep(0.2)
        base = rss_kib(server.proc.pid)
        for _ in range(count):
            socks.append(socket.create_connection((host, int(port))))
        deadline = time.monotonic() + 10
        last = -1
        while time.monotonic() < deadline:  # until the server has accepted them all
            time.sleep(0.3)
            now = rss_kib(server.proc.pid)
            if now == last:
                break
            last = now
        return {"rss_growth_kib": rss_kib(server.proc.pid) - base}
    except OSError as exc:
        return {"unsupported": f"could not open {count} connections: {exc}"}
    finally:
        for s in socks:
            s.close()
        server.close()


def run_network(rounds, seconds, only):
    results = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = pathlib.Path(tmpdir)
        for name, workload, size in WORKLOADS:
            if only and not any(o in name or o == workload for o in only):
                continue
            per_round = []
            for r in range(rounds):
                order = LOOPS[r % len(LOOPS) :] + LOOPS[: r % len(LOOPS)]
                per_round.append({loop: measure(loop, workload, size, seconds, tmp) for loop in order})
            results[name] = per_round
            print(f"  {name}: done", file=sys.stderr, flush=True)
        if not only or "memory" in only:
            results["memory"] = {loop: idle_memory(loop, tmp) for loop in LOOPS if loop != "reference"}
    return results


def summarize(network):
    """Medians over rounds, and per-round ratios to uvloop (CPU per request: uvloop's / ours)."""
    rows = {}
    for name, rounds in network.items():
        if name == "memory":
            continue
        row = {}
        for loop in LOOPS:
            ok = [r[loop] for r in rounds if "cpu_us_per_req" in r[loop]]
            if not ok:
                row[loop] = {"unsupported": rounds[0][loop].get("unsupported", "failed")}
                continue
            keys = ("rps", "p50_us", "p99_us", "cpu_us_per_req", "sys_us_per_req")
            cell = {k: statistics.median(x[k] for x in ok) for k in keys if all(k in x for x in ok)}
            ratios = [
                r["uvloop"]["cpu_us_per_req"] / r[loop]["cpu_us_per_req"]
                for r in rounds
                if "cpu_us_per_req" in r[loop] and "cpu_us_per_req" in r.get("uvloop", {})
            ]
            if ratios:
                cell["vs_uvloop"] = statistics.median(ratios)
            overheads = [
                (r[loop]["cpu_us_per_req"] - r["reference"]["cpu_us_per_req"])
                / max(r["uvloop"]["cpu_us_per_req"] - r["reference"]["cpu_us_per_req"], 1e-9)
                for r in rounds
                if all("cpu_us_per_req" in r.get(k, {}) for k in (loop, "uvloop", "reference"))
            ]
            if overheads and loop not in ("reference", "uvloop"):
                cell["overhead_vs_uvloop"] = statistics.median(overheads)
            if loop == "reference" and ratios:
                # No Python at all: the ratio to uvloop that no loop can pass on this machine.
                cell["ceiling_vs_uvloop"] = cell["vs_uvloop"]
            row[loop] = cell
        rows[name] = row
    return rows


def run_micro(rounds):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "micro.py"), "--json", "--rounds", str(rounds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def versions():
    found = {"python": platform.python_version()}
    for mod in ("uvloop", "rloop", "ferroloop", "httptools"):
        try:
            found[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            found[mod] = "not installed"
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    found["machine"] = f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}"
    return found


def fmt_cell(cell, key, digits=1, unit=""):
    if "unsupported" in cell:
        return "unsupported"
    return f"{cell[key]:.{digits}f}{unit}" if key in cell else "–"


def markdown(rows, memory, micro, info, seconds, rounds):
    lines = [
        (
            f"Measured {info.get('date') or time.strftime('%Y-%m-%d')} on {info['machine']}; Python {info['python']}, "
            f"uvloop {info['uvloop']}, rloop {info['rloop']}, ferroloop {info['ferroloop']}. "
            f"{rounds} rounds of {seconds} s per workload, {CONNS} connections "
            f"({', '.join(f'{n} for {w}' for w, n in CONNS_FOR.items())}), server on CPU 0, client on CPU 1."
        ),
        "",
        (
            "**Server CPU time per request** (µs, median; lower is better) and speed relative to uvloop "
            "(uvloop's CPU per request ÷ this loop's, median of per-round ratios; higher is better), and "
            "ferroloop's overhead above the reference server as a fraction of uvloop's (median of per-round "
            "ratios; lower is better; noisy where all loops are within a few percent of the reference):"
        ),
        "",
        (
            "| workload | reference | asyncio | uvloop | rloop | ferroloop | ferroloop vs uvloop | rloop vs uvloop "
            "| ferroloop overhead ÷ uvloop's |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        cells = [fmt_cell(row[loop], "cpu_us_per_req", 2) for loop in LOOPS]
        ratios = [
            fmt_cell(row["ferroloop"], "vs_uvloop", 2, "×"),
            fmt_cell(row["rloop"], "vs_uvloop", 2, "×"),
            fmt_cell(row["ferroloop"], "overhead_vs_uvloop", 2),
        ]
        lines.append(f"| {name} | " + " | ".join(cells + ratios) + " |")
    if any("sys_us_per_req" in row[loop] for row in rows.values() for loop in LOOPS):
        lines += [
            "",
            (
                "**Kernel and user time per request** (µs, median; kernel / the rest: the server's system "
                "time, from the kernel's tick-sampled accounting, so a split within about 10 %), and the "
                "ceiling: uvloop's CPU per request ÷ the reference server's, the ratio to uvloop that a loop "
                "costing nothing in user space would reach (the loops make the same system calls per request):"
            ),
            "",
            "| workload | " + " | ".join(LOOPS) + " | ceiling vs uvloop |",
            "| --- |" + " ---: |" * (len(LOOPS) + 1),
        ]
        for name, row in rows.items():
            cells = []
            for loop in LOOPS:
                c = row[loop]
                if "sys_us_per_req" not in c:
                    cells.append(fmt_cell(c, "sys_us_per_req"))
                    continue
                user = c["cpu_us_per_req"] - c["sys_us_per_req"]
                cells.append(f"{c['sys_us_per_req']:.1f} / {user:.1f}")
            cells.append(fmt_cell(row["reference"], "ceiling_vs_uvloop", 2, "×"))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**Requests per second and latency** (median; p50 / p99 in µs):",
        "",
        "| workload | " + " | ".join(LOOPS) + " |",
        "| --- |" + " ---: |" * len(LOOPS),
    ]
    for name, row in rows.items():
        cells = []
        for loop in LOOPS:
            c = row[loop]
            cells.append(
                "unsupported" if "unsupported" in c else f"{c['rps']:,.0f} ({c['p50_us']:.0f} / {c['p99_us']:.0f})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if memory:
        lines += [
            "",
            "**Memory**: server RSS growth with 10,000 idle connections (MiB; lower is better):",
            "",
            "| " + " | ".join(memory) + " |",
            "|" + " ---: |" * len(memory),
            "| "
            + " | ".join(
                "unsupported" if "unsupported" in m else f"{m['rss_growth_kib'] / 1024:.1f}" for m in memory.values()
            )
            + " |",
        ]
    if micro:
        loops = micro["loops"]
        lines += [
            "",
            "**In-process micro-benchmarks** (µs per operation, median; ratio = uvloop's time ÷ this loop's):",
            "",
            "| benchmark | " + " | ".join(loops) + " | ferroloop vs uvloop |",
            "| --- |" + " ---: |" * (len(loops) + 1),
        ]
        for name, res in micro["results"].items():
            cells = [f"{res['us_per_op'][lp]:.3f}" if lp in res["us_per_op"] else "unsupported" for lp in loops]
            ratio = res.get("vs", {}).get("uvloop", {}).get("ferroloop")
            lines.append(
                f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f}× |"
                if ratio
                else f"| {name} | " + " | ".join(cells) + " | – |"
            )
        if "fairness" in micro:
            f = micro["fairness"]
            lines += [
                "",
                (
                    f"**Fairness** (ferroloop): with a call_soon chain keeping the ready queue busy, data arriving "
                    f"on a socket was handled after {f['p50_us']:.0f} µs (median), {f['p99_us']:.0f} µs (p99), "
                    f"{f['max_us']:.0f} µs (max) over {f['samples']} samples; bound 250 µs: "
                    f"{'met' if f['p99_us'] <= 250 else 'NOT met'} at p99."
                ),
            ]
    return "\n".join(lines) + "\n"


CLIP = 3.0  # the chart's widest ratio to uvloop


def chart(rows, micro, path):
    """Speed relative to uvloop (its CPU per request ÷ each loop's; micro: time per operation),
    the network workloads with the reference server (no Python: the floor) beside the loops."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [
        (
            "Network servers: CPU per request (reference = a Rust server with no Python, the floor)",
            list(rows),
            {loop: [rows[n][loop].get("vs_uvloop", 0.0) for n in rows] for loop in LOOPS},
        )
    ]
    if micro:
        names = list(micro["results"])
        results = micro["results"]
        speed = {
            loop: [results[n].get("vs", {}).get("uvloop", {}).get(loop, 0.0) for n in names] for loop in micro["loops"]
        }
        panels.append(("In-process micro-benchmarks: time per operation", names, speed))
    heights = [0.55 * len(names) * len(series) / 4 + 1 for _, names, series in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, sum(heights)), height_ratios=heights, squeeze=False)
    colors = {"reference": "0.6", "asyncio": "C3", "uvloop": "C0", "rloop": "C2", "ferroloop": "C1"}
    for ax, (title, names, series) in zip(axes[:, 0], panels, strict=True):
        height = 0.8 / len(series)
        # Past CLIP× a bar is cut at CLIP and its value written beside it, so that one far
        # reference (an app whose own Python is most of a request) does not squash the rest.
        for i, (loop, values) in enumerate(series.items()):
            offsets = [y + (i - (len(series) - 1) / 2) * height for y in range(len(names))]
            hatch = "//" if loop == "reference" else None
            shown = [min(v, CLIP) for v in values]
            ax.barh(offsets, shown, height, label=loop, color=colors[loop], hatch=hatch)
            for offset, v in zip(offsets, values, strict=True):
                if v > CLIP:
                    ax.text(CLIP + 0.02, offset, f"{v:.1f}×", ha="left", va="center", fontsize=7)
        ax.set_xlim(0, CLIP + 0.25)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.xaxis.set_major_formatter("{x:.1f}×")
        ax.grid(axis="x", linewidth=0.3)
        ax.set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("speed relative to uvloop (higher is better)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    return True


def update_readme(md):
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{md}\n![benchmark chart](bench/results/latest.png)\n{end}{tail}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--only", nargs="*", default=[], help="substrings of workload names (or 'memory', 'micro')")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--render", action="store_true", help="only rewrite the tables from latest.json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((RESULTS / "latest.json").read_text())
        rows = summarize(saved["network"])
        info = saved["info"]
        seconds, rounds = info.get("seconds", args.seconds), info.get("rounds", args.rounds)
        md = markdown(rows, saved["network"].get("memory"), saved["micro"], info, seconds, rounds)
        (RESULTS / "latest.md").write_text(md)
        chart(rows, saved["micro"], RESULTS / "latest.png")
        update_readme(md)
        return
    for tool in ("loadgen", "refserver"):
        if not (BIN / tool).exists():
            sys.exit(f"{BIN / tool} is missing: run `cargo build --release -p ferroloop-bench`")
    started = time.monotonic()
    network = run_network(args.rounds, args.seconds, args.only)
    rows = summarize(network)
    micro = run_micro(args.rounds + 2) if not args.only or "micro" in args.only else None
    info = versions() | {"date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "seconds": args.seconds}
    md = markdown(rows, network.get("memory"), micro, info, args.seconds, args.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(md)
    (RESULTS / "latest.json").write_text(
        json.dumps({"info": info, "network": network, "rows": rows, "micro": micro}, indent=1)
    )
    chart(rows, micro, RESULTS / "latest.png")
    if not args.no_readme and not args.only:
        update_readme(md)
    print(md)
    print(f"bench: {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
