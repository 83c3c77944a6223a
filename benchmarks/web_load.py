"""Load test of ``mktg serve`` on 127.0.0.1: N concurrent clients browse console pages and API calls and download
a large target list for a fixed time, then stop by themselves. Prints errors, page latency percentiles and the
server's peak resident memory.

The world is a generated bank with a real campaign run (tests/jobs/process_helpers.py's set-up); its
published ``targets.csv`` is then grown to ``--rows`` rows by repeating its rows (the serving path only streams
the file, so what the rows say does not matter to the figures; the manifest's byte count is updated to match).

    .venv/bin/python benchmarks/web_load.py --clients 50 --seconds 60 --rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "jobs"))

from process_helpers import campaign_world  # noqa: E402

from campaigns.db.session import make_engine, upgrade  # noqa: E402
from jobs.demo import world_as_of  # noqa: E402
from jobs.settings import load_settings  # noqa: E402
from jobs.web import services  # noqa: E402
from jobs.web.services import run_campaign  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--download-every", type=int, default=10, help="each client downloads once per N requests")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mktg-web-load-"))
    engine = make_engine(f"sqlite:///{work / 'load.db'}")
    upgrade(engine)
    config = campaign_world(work, engine, customers=600)
    settings = load_settings(config, environ={})
    fire = (world_as_of(work / "world") + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    run = run_campaign(settings, engine, "every3s", fire).run
    directory = settings.export_dir / "every3s" / run["run_id"]
    lines = (directory / "targets.csv").read_text().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    with (directory / "targets.csv").open("w") as out:
        out.write(header)
        for i in range(args.rows):
            out.write(body[i % len(body)])
    size = (directory / "targets.csv").stat().st_size
    services.add_user(engine, "load", "load-password-1", "ops,crm,analyst")
    token, _ = services.create_token(engine, "load", "load test")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKTG_")} | {"PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from jobs.cli import main; main()",
            "--config",
            str(config),
            "serve",
            "--port",
            str(port),
        ],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    pages = [
        "/",
        "/campaigns/every3s",
        f"/runs/{run['run_id']}",
        "/models",
        "/jobs",
        "/api/campaigns",
        f"/api/runs/{run['run_id']}",
        f"/api/runs/{run['run_id']}/targets?format=json&offset=0&limit=100",
    ]
    latencies: list[float] = []
    downloads: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds
    peak = [rss_kib(server.pid)]

    def client(index: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            n = index
            while time.monotonic() < stop_at:
                n += 1
                try:
                    if n % args.download_every == 0:
                        started = time.perf_counter()
                        got = 0
                        with http.stream("GET", f"/api/runs/{run['run_id']}/targets") as response:
                            for chunk in response.iter_bytes():
                                got += len(chunk)
                        if response.status_code != 200 or got != size:
                            raise RuntimeError(f"download: {response.status_code}, {got} of {size} bytes")
                        with lock:
                            downloads.append(time.perf_counter() - started)
                    else:
                        path = pages[n % len(pages)]
                        started = time.perf_counter()
                        response = http.get(path)
                        if response.status_code != 200:
                            raise RuntimeError(f"{path}: {response.status_code}")
                        with lock:
                            latencies.append(time.perf_counter() - started)
                except Exception as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")

    def sample() -> None:
        while time.monotonic() < stop_at + 1:
            peak[0] = max(peak[0], rss_kib(server.pid))
            time.sleep(0.2)

    idle_rss = rss_kib(server.pid)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    threads.append(threading.Thread(target=sample))
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    server.terminate()
    server.wait(timeout=30)
    latencies.sort()
    downloads.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    result = {
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "target_rows": args.rows,
        "target_bytes": size,
        "page_requests": len(latencies),
        "downloads": len(downloads),
        "errors": len(errors),
        "first_errors": errors[:5],
        "page_ms": {
            "p50": round(pct(latencies, 0.5), 1),
            "p95": round(pct(latencies, 0.95), 1),
            "p99": round(pct(latencies, 0.99), 1),
        },
        "download_s": {"p50": round(pct(downloads, 0.5) / 1000, 2), "p95": round(pct(downloads, 0.95) / 1000, 2)},
        "server_rss_mib": {"idle": round(idle_rss / 1024, 1), "peak": round(peak[0] / 1024, 1)},
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    engine.dispose()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
