"""Target-list files for CRM teams (SPEC section 5), written so they appear complete or not at all.

Under ``<export_root>/<campaign_id>/<run_id>/``: ``targets.csv`` and ``targets.parquet`` (the rows to contact),
``control.csv`` (the control arm and holdouts: tracked, never contacted), all with :data:`TARGET_COLUMNS` in that
order, and ``manifest.json`` (row counts per file, arm and offer, audience per arm, sha256 of every file, model
versions, config hash). CSV text fields are quoted, so ``schema_version`` stays text (``"1.0"``).
Everything is first written into a hidden staging directory, each file under a temporary name then renamed,
the manifest last; :func:`publish` then renames the whole directory into place in one step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from campaigns.arms import contacted_expr
from campaigns.times import iso_utc

SCHEMA_VERSION = "1.0"
TARGET_SCHEMA: dict[str, pl.DataType] = {
    "schema_version": pl.String(),
    "campaign_id": pl.String(),
    "run_id": pl.String(),
    "customer_id": pl.String(),
    "offer_id": pl.String(),
    "offer_rank": pl.Int32(),
    "score": pl.Float64(),
    "segment": pl.String(),
    "arm": pl.String(),
    "channel": pl.String(),
    "generated_at": pl.Datetime("us"),
}
TARGET_COLUMNS = tuple(TARGET_SCHEMA)
CSV_DATETIME = "%Y-%m-%dT%H:%M:%SZ"  # UTC, ISO 8601
FILES = ("targets.csv", "targets.parquet", "control.csv")


@dataclass(frozen=True)
class StagedExport:
    staging: Path
    final: Path
    manifest: dict[str, Any]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_replace(tmp: Path, final: Path) -> None:
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def write_csv(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_csv(tmp, datetime_format=CSV_DATETIME, quote_style="non_numeric")
    _fsync_replace(tmp, path)


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp, compression="zstd", statistics=True)
    _fsync_replace(tmp, path)


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    grouped = frame.group_by(column).len().sort(column)
    return dict(zip(grouped[column].to_list(), grouped["len"].to_list()))


def stage_export(
    rows: pl.DataFrame,
    *,
    export_root: Path,
    campaign_id: str,
    run_id: str,
    scheduled_for: datetime,
    generated_at: datetime,
    model_versions: dict[str, str],
    config_hash: str,
    audience_per_arm: dict[str, int] | None = None,
) -> StagedExport:
    """Write every file into a hidden staging directory next to the final one; nothing is visible yet.

    ``rows`` holds :data:`TARGET_COLUMNS` for every arm (control and holdouts included). On any error the
    staging directory is removed and the error re-raised.
    """
    rows = rows.select(TARGET_COLUMNS)
    campaign_dir = Path(export_root) / campaign_id
    campaign_dir.mkdir(parents=True, exist_ok=True)
    staging = campaign_dir / f".{run_id}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        contacted = rows.filter(contacted_expr("arm"))
        control = rows.filter(~contacted_expr("arm"))
        write_csv(contacted, staging / "targets.csv")
        write_parquet(contacted, staging / "targets.parquet")
        write_csv(control, staging / "control.csv")
        row_counts = {
            "targets.csv": contacted.height,
            "targets.parquet": contacted.height,
            "control.csv": control.height,
        }
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "campaign_id": campaign_id,
            "run_id": run_id,
            "scheduled_for": iso_utc(scheduled_for),
            "generated_at": iso_utc(generated_at),
            "channel": rows["channel"][0] if rows.height else None,
            "columns": list(TARGET_COLUMNS),
            "model_versions": dict(sorted(model_versions.items())),
            "config_hash": config_hash,
            "rows_total": rows.height,  # targets.csv + control.csv
            "rows_contacted": contacted.height,  # targets.csv (= targets.parquet)
            "rows_not_contacted": control.height,  # control.csv: control arm and holdouts
            "rows_per_arm": _counts(rows, "arm"),
            "audience_per_arm": dict(sorted((audience_per_arm or {}).items())),
            "rows_per_offer": _counts(rows, "offer_id"),
            "files": {
                name: {
                    "sha256": sha256_of(staging / name),
                    "bytes": (staging / name).stat().st_size,
                    "rows": row_counts[name],
                }
                for name in FILES
            },
        }
        tmp = staging / ".manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        _fsync_replace(tmp, staging / "manifest.json")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return StagedExport(staging=staging, final=campaign_dir / run_id, manifest=manifest)


def publish(staged: StagedExport) -> Path:
    """Rename the staging directory to its final name (atomic on one file system)."""
    os.replace(staged.staging, staged.final)
    return staged.final


def discard(staged: StagedExport, *, published: bool) -> None:
    """Remove an export whose database transaction failed: the staging directory, and the final one only if
    this attempt published it (otherwise it may belong to a concurrent winner)."""
    shutil.rmtree(staged.staging, ignore_errors=True)
    if published:
        shutil.rmtree(staged.final, ignore_errors=True)


def remove_leftovers(staged: StagedExport) -> list[Path]:
    """Delete what earlier crashed attempts at the same run left: other staging directories and an
    unconfirmed final directory. Call only while holding the run key (its row inserted, not yet committed)."""
    campaign_dir = staged.final.parent
    removed = []
    for path in [*campaign_dir.glob(f".{staged.final.name}.tmp-*"), staged.final]:
        if path != staged.staging and path.exists():
            shutil.rmtree(path)
            removed.append(path)
    return removed


def remove_stale_staging(export_root: Path, *, hold: Callable[[str, str], AbstractContextManager[bool]]) -> list[Path]:
    """Remove the hidden staging directories (``<export_root>/<campaign>/.<run_id>.tmp-*``) that no live process
    is writing, and return them. Killed attempts leave them behind (a later attempt at the same run removes its
    own, see :func:`remove_leftovers`; this removes the rest). ``hold(campaign_id, run_id)`` takes the liveness
    lock of that run's writer and yields whether it got it; the directory is removed only while it is held."""
    root = Path(export_root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for staging in sorted(root.glob("*/.*.tmp-*")):
        run_id = staging.name[1:].rpartition(".tmp-")[0]
        if not staging.is_dir() or not run_id:
            continue
        with hold(staging.parent.name, run_id) as free:
            if free and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
                removed.append(staging)
    return removed


def verify_manifest(directory: Path) -> dict[str, Any]:
    """Re-hash every file listed in ``manifest.json``; raise ValueError on a mismatch. Returns the manifest."""
    manifest: dict[str, Any] = json.loads((Path(directory) / "manifest.json").read_text(encoding="utf-8"))
    for name, info in manifest["files"].items():
        actual = sha256_of(Path(directory) / name)
        if actual != info["sha256"]:
            raise ValueError(f"{directory}/{name}: sha256 {actual} does not match the manifest ({info['sha256']})")
    return manifest
