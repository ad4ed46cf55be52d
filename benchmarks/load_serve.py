"""Load test for ``alignpro serve``: N concurrent clients for T seconds; prints one JSON line of results.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/load_serve.py --clients 64 --duration 30

Three processes on 127.0.0.1, so the load generator does not share a GIL with what it measures:

1. the fake OpenAI-compatible target (``python -m tests.fake_openai_server``), answering after ``--target-delay-ms``;
2. ``alignpro serve --prompter <--prompter> --target openai:fake-model@<fake>?no_key=true&cache=off&concurrency=C``;
3. this script: ``--clients`` asyncio clients (one shared ``httpx.AsyncClient``) sending chat completions
   back-to-back for ``--duration`` seconds after a warm-up; every ``--stream-every``-th request streams.

A request counts as an error unless it returns 200 with the answer and the ``alignpro`` audit field (for a
stream: the audit in the first chunk and a final ``[DONE]``). Latency is measured per request, end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["How do I cook rice?", "Explain tides to a child.", "Write a haiku about autumn.",
           "What is a hash table?", "Plan a weekend in Lisbon.", "How can I sleep better?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], health: str, log: Path, timeout_s: float = 120.0) -> subprocess.Popen:
    """Start ``cmd`` (its output goes to ``log``) and wait until ``health`` answers 200."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[:4]} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"{cmd[:4]} did not become healthy within {timeout_s} s")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds used so far by process ``pid`` (this process when None)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


async def one_request(client: httpx.AsyncClient, url: str, i: int, stream: bool) -> bool:
    body = {"model": "alignpro", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "stream": stream}
    if not stream:
        r = await client.post(url, json=body)
        if r.status_code != 200:
            return False
        data = r.json()
        return bool(data["choices"][0]["message"]["content"]) and "alignpro" in data
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            return False
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    return len(lines) >= 3 and "alignpro" in json.loads(lines[0][6:]) and lines[-1] == "data: [DONE]"


async def load(url: str, clients: int, duration_s: float, warmup_s: float, stream_every: int) -> dict:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    errors: list[str] = []
    counter = 0
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def worker(end: float, record: bool) -> None:
            nonlocal counter
            while time.perf_counter() < end:
                counter += 1
                i = counter
                stream = stream_every > 0 and i % stream_every == 0
                t0 = time.perf_counter()
                try:
                    error = None if await one_request(client, url, i, stream) else "bad status or body"
                except Exception as exc:  # noqa: BLE001 - every failure is an error in the report
                    error = f"{type(exc).__name__}: {exc!r} (stream={stream}, after {time.perf_counter() - t0:.2f} s)"
                if record:
                    latencies.append(time.perf_counter() - t0)
                    if error:
                        errors.append(error)

        await asyncio.gather(*[worker(time.perf_counter() + warmup_s, False) for _ in range(clients)])
        start = time.perf_counter()
        await asyncio.gather(*[worker(start + duration_s, True) for _ in range(clients)])
        elapsed = time.perf_counter() - start
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 2)

    return {"requests": len(lat), "errors": len(errors), "error_samples": errors[:5],
            "elapsed_s": round(elapsed, 2), "throughput_rps": round(len(lat) / elapsed, 1),
            "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": round(1000 * lat[-1], 2),
                           "mean": round(1000 * statistics.fmean(lat), 2)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=64, help="concurrent clients")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of measured load")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first")
    p.add_argument("--prompter", default="fake", help="prompter spec for serve: fake | smollm2 | hf:<id or path>")
    p.add_argument("--target-delay-ms", type=float, default=20.0, help="latency of the fake target model")
    p.add_argument("--target-concurrency", type=int, default=64, help="the openai: target's concurrency option")
    p.add_argument("--max-batch", type=int, default=16, help="serve --max-batch")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="serve --batch-wait-ms")
    p.add_argument("--stream-every", type=int, default=4, help="every Nth request streams (0 = never)")
    args = p.parse_args()

    fake_port, serve_port = free_port(), free_port()
    logs = Path(tempfile.mkdtemp(prefix="load_serve-"))
    fake = start([sys.executable, "-m", "tests.fake_openai_server", "--port", str(fake_port), "--delay-ms",
                  str(args.target_delay_ms)], f"http://127.0.0.1:{fake_port}/health", logs / "fake_target.log")
    procs = [fake]
    try:
        target = (f"openai:fake-model@http://127.0.0.1:{fake_port}/v1?no_key=true&cache=off"
                  f"&concurrency={args.target_concurrency}")
        serve = start([sys.executable, "-m", "alignpro", "serve", "--prompter", args.prompter, "--target", target,
                       "--port", str(serve_port), "--max-batch", str(args.max_batch), "--batch-wait-ms",
                       str(args.batch_wait_ms), "--log-level", "warning"], f"http://127.0.0.1:{serve_port}/health",
                      logs / "serve.log", timeout_s=600)
        procs.append(serve)
        cpu0 = {"serve": cpu_seconds(serve.pid), "fake_target": cpu_seconds(fake.pid), "load_generator": cpu_seconds()}
        result = asyncio.run(load(f"http://127.0.0.1:{serve_port}/v1/chat/completions", args.clients,
                                  args.duration, args.warmup, args.stream_every))
        cpu = {"serve": cpu_seconds(serve.pid), "fake_target": cpu_seconds(fake.pid), "load_generator": cpu_seconds()}
        result["cpu_ms_per_request"] = {k: round(1000 * (cpu[k] - cpu0[k]) / max(1, result["requests"]), 2)
                                        for k in cpu}
        health = httpx.get(f"http://127.0.0.1:{serve_port}/health").json()
    finally:
        for proc in reversed(procs):
            stop(proc)
    report = {"benchmark": "load_serve", "clients": args.clients, "duration_s": args.duration,
              "prompter": args.prompter, "target": "fake openai-compatible server",
              "target_delay_ms": args.target_delay_ms, "stream_every": args.stream_every,
              "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms, "logs": str(logs), **result,
              "rewrite_batches": health.get("rewrite_batches"), "target_usage": health.get("target_usage"),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()}}
    print(json.dumps(report))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
