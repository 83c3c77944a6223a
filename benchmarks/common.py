"""Shared by the benchmark scripts: the synthetic world they run on and a description of the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def ensure_world(directory: Path, customers: int, seed: int) -> dict[str, Any]:
    """Generate a synthetic world into ``directory`` unless one is there (written aside, then renamed)."""
    if (directory / "customers.parquet").exists() and (directory / "ground_truth.json").exists():
        return {"generated": False}
    from campaigns.demo.synthetic import generate_world

    print(f"generating a synthetic world of {customers:,} customers into {directory} ...", flush=True)
    started = time.perf_counter()
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    generate_world(tmp, customers=customers, seed=seed)
    try:
        tmp.rename(directory)
    except OSError:  # another process generated it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return {"generated": True, "seconds": time.perf_counter() - started}


def machine_info() -> dict[str, Any]:
    """CPU model (lscpu), cores, memory line of ``free -h``, load average and Python version."""

    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    model = next(
        (line.split(":", 1)[1].strip() for line in run("lscpu").splitlines() if line.startswith("Model name")), ""
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": (run("free", "-h").splitlines() or ["", ""])[1],
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
    }
