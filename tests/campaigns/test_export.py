"""Export files: exact SPEC column order, control file apart, manifest sha256 of every file, no partial files."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime

import polars as pl
import pytest

from campaigns import export

COLUMNS = [
    "schema_version",
    "campaign_id",
    "run_id",
    "customer_id",
    "offer_id",
    "offer_rank",
    "score",
    "segment",
    "arm",
    "channel",
    "generated_at",
]
GENERATED = datetime(2026, 6, 1, 9, 0, 5)


def rows():
    return pl.DataFrame(
        {
            "schema_version": "1.0",
            "campaign_id": "camp",
            "run_id": "camp-1",
            "customer_id": ["a", "b", "c", "d"],
            "offer_id": ["X", "Y", "X", "X"],
            "offer_rank": [1, 1, 1, 1],
            "score": [0.5, 0.25, 0.125, 1.0],
            "segment": ["s1", "s1", "s2", "s2"],
            "arm": ["als", "control", "pop", "als:holdout"],
            "channel": "sms",
            "generated_at": GENERATED,
        }
    ).select(COLUMNS)


def stage(tmp_path):
    return export.stage_export(
        rows(),
        export_root=tmp_path,
        campaign_id="camp",
        run_id="camp-1",
        scheduled_for=datetime(2026, 6, 1, 9),
        generated_at=GENERATED,
        model_versions={"als": "als-v1"},
        config_hash="abc",
    )


def test_files_manifest_and_column_order(tmp_path):
    staged = stage(tmp_path)
    assert not staged.final.exists()  # nothing visible before publish
    final = export.publish(staged)
    assert sorted(p.name for p in final.iterdir()) == ["control.csv", "manifest.json", "targets.csv", "targets.parquet"]
    with (final / "targets.csv").open(encoding="utf-8") as fh:
        table = list(csv.reader(fh))
    assert table[0] == COLUMNS
    assert sorted(r[3] for r in table[1:]) == ["a", "c"]  # the held-out customer d is not to be contacted
    assert table[1][-1] == "2026-06-01T09:00:05Z"
    with (final / "control.csv").open(encoding="utf-8") as fh:
        control = list(csv.reader(fh))
    assert control[0] == COLUMNS and sorted((r[3], r[8]) for r in control[1:]) == [
        ("b", "control"),
        ("d", "als:holdout"),
    ]
    # the schema version is quoted text, never a bare number a CSV reader would turn into the float 1.0
    assert (final / "targets.csv").read_text().splitlines()[1].startswith('"1.0","camp","camp-1",')
    parquet = pl.read_parquet(final / "targets.parquet")
    assert parquet.columns == COLUMNS
    assert parquet.sort("customer_id")["score"].to_list() == [0.5, 0.125]

    manifest = json.loads((final / "manifest.json").read_text())
    for name in ("targets.csv", "targets.parquet", "control.csv"):
        assert manifest["files"][name]["sha256"] == hashlib.sha256((final / name).read_bytes()).hexdigest()
    assert manifest["rows_per_arm"] == {"als": 1, "als:holdout": 1, "control": 1, "pop": 1}
    assert manifest["rows_per_offer"] == {"X": 3, "Y": 1}
    assert (manifest["rows_total"], manifest["rows_contacted"], manifest["rows_not_contacted"]) == (4, 2, 2)
    assert manifest["files"]["targets.csv"]["rows"] == 2 and manifest["files"]["control.csv"]["rows"] == 2
    assert manifest["schema_version"] == "1.0" and manifest["config_hash"] == "abc"
    assert manifest["model_versions"] == {"als": "als-v1"} and manifest["scheduled_for"] == "2026-06-01T09:00:00Z"
    assert export.verify_manifest(final)["run_id"] == "camp-1"
    (final / "control.csv").write_text("tampered")
    with pytest.raises(ValueError, match="control.csv"):
        export.verify_manifest(final)


def test_crash_while_writing_leaves_nothing(tmp_path, monkeypatch):
    def boom(frame, path):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        stage(tmp_path)
    assert list((tmp_path / "camp").iterdir()) == []
