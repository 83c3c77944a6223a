"""mktg train / evaluate / recommend end to end on a tiny generated world."""

from __future__ import annotations

import json

import pytest

from campaigns.demo.synthetic import generate_world

FAST_MODELS = "popularity,als"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = tmp_path_factory.mktemp("world")
    generate_world(path, customers=400, seed=3)
    return path


@pytest.fixture
def mktg(cli, monkeypatch):
    """``mktg(tmp_path, *args)``: the CLI in this process on a database and var/ under ``tmp_path``, with none of
    this environment's MKTG_* settings."""
    for name in ("MKTG_CONFIG_DIR", "MKTG_DATA_DIR", "MKTG_DATABASE_URL", "MKTG_VAR_DIR", "MKTG_THREADS"):
        monkeypatch.delenv(name, raising=False)

    def run(tmp_path, *args):
        env = {
            "MKTG_VAR_DIR": str(tmp_path / "var"),
            "MKTG_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'm.db'}",
            "MKTG_THREADS": "1",
            "COLUMNS": "200",
        }
        return cli(*args, env=env)

    return run


def test_train_needs_a_migrated_database_then_registers_and_recommend_uses_active_model(world, tmp_path, mktg):
    refused = mktg(tmp_path, "train", "--data", str(world), "--models", FAST_MODELS)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "has no mktg schema: run `mktg db upgrade`" in refused.stderr
    assert mktg(tmp_path, "db", "upgrade").returncode == 0
    out = mktg(tmp_path, "train", "--data", str(world), "--models", FAST_MODELS)
    assert out.returncode == 0, out.stderr
    saved = sorted(p.name for p in (tmp_path / "var" / "models").iterdir())
    assert len(saved) == 2 and {s.split("-")[0] for s in saved} == {"popularity", "als"}
    rec = mktg(
        tmp_path, "recommend", "--data", str(world), "--customer", "C00000005", "--k", "3", "--model", "als", "--all"
    )  # the model's ranking (eligibility marks only): tests/jobs/test_cli_recommend.py covers the rest
    assert rec.returncode == 0, rec.stderr
    assert "als-" in rec.stdout and rec.stdout.count("C00000005") == 3


def test_recommend_errors_are_one_line(world, tmp_path, mktg):
    assert mktg(tmp_path, "db", "upgrade").returncode == 0
    none = mktg(tmp_path, "recommend", "--data", str(world), "--customer", "C00000005", "--model", "als")
    assert none.returncode == 2 and "run `mktg train` first" in none.stderr and "Traceback" not in none.stderr
    mktg(tmp_path, "train", "--data", str(world), "--models", "popularity")
    bad = mktg(tmp_path, "recommend", "--data", str(world), "--customer", "NOPE", "--model", "popularity")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "NOPE" in bad.stderr


def test_evaluate_prints_table_and_writes_json(world, tmp_path, mktg):
    target = tmp_path / "eval.json"
    out = mktg(
        tmp_path, "evaluate", "--data", str(world), "--models", FAST_MODELS, "--k", "5", "--json-file", str(target)
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(target.read_text())
    assert [r["model"] for r in doc["results"]] == ["popularity", "als"]
    for r in doc["results"]:
        assert (
            r["k"] == 5
            and 0 <= r["overall"]["ndcg"] <= 1
            and r["overall"]["customers"] == doc["split"]["test_customers"]
        )
        assert r["per_segment"] and 0 <= r["ground_truth"]["ndcg"] <= 1
    assert "popularity" in out.stdout


def test_unknown_model_name_is_a_config_error(world, tmp_path, mktg):
    assert mktg(tmp_path, "db", "upgrade").returncode == 0
    out = mktg(tmp_path, "train", "--data", str(world), "--models", "nonsense")
    assert out.returncode == 2 and "unknown model 'nonsense'" in out.stderr


def test_evaluate_warns_when_k_covers_every_candidate(world, tmp_path, mktg):
    """With k at least each test customer's number of candidate offers, every model returns all of them and
    precision/recall are equal for all models: the command says so instead of printing equal figures silently."""
    wide = mktg(tmp_path, "evaluate", "--data", str(world), "--models", "popularity", "--k", "100", "--json")
    assert wide.returncode == 0, wide.stderr
    assert "warning: k=100 is at least the number of candidate offers" in " ".join(wide.stderr.split())
    assert json.loads(wide.stdout)["split"]["warnings"]
    narrow = mktg(tmp_path, "evaluate", "--data", str(world), "--models", "popularity", "--k", "2", "--json")
    assert (
        narrow.returncode == 0
        and "warning" not in narrow.stderr
        and json.loads(narrow.stdout)["split"]["warnings"] == []
    )
