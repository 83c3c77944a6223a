"""`mktg data validate` fails closed (issue 10): unreadable tables are errors, rule inputs the data lacks are warned."""

import json
from pathlib import Path

import polars as pl
import pytest

from campaigns.demo.synthetic import generate_world

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture
def validate(cli):
    """``validate(directory, *extra)``: `mktg data validate` in this process, run in ``directory``."""
    return lambda directory, *extra: cli(
        "--config", str(CONFIG), "data", "validate", str(directory), *extra, cwd=directory
    )


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_world(out, customers=300, seed=3, fmt="csv")
    return out


def test_a_rule_column_the_data_lacks_is_named_with_its_rule_and_campaigns(world_dir, tmp_path, validate):
    # finding: a risk table without kyc_ok excluded everyone and `mktg data validate` said nothing
    for f in world_dir.iterdir():
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "risk.csv").unlink()
    pl.read_csv(world_dir / "risk.csv", infer_schema=False).drop("kyc_ok").write_csv(tmp_path / "risk.csv")
    res = validate(tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        "warning: table 'risk' has no column 'kyc_ok': rule 'kyc' (rule set 'default', used by cc_cross_sell, "
        "cc_uplift, instalment_push, savings_wealth_email) excludes every pair"
    ]
    assert "(1 warning)" in " ".join(res.stdout.split())  # the title may wrap
    as_json = validate(tmp_path, "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["warnings"] == [
        res.stderr.removeprefix("warning: ").strip()
    ]


def test_an_unreadable_suppression_file_fails_validation(world_dir, tmp_path, validate):
    # finding: a broken suppression link was "no suppressions" and validate said "all tables valid"
    for f in world_dir.iterdir():
        if f.name != "suppression.csv":
            (tmp_path / f.name).symlink_to(f)
    (tmp_path / "suppression.csv").symlink_to(tmp_path / "moved-away.csv")
    res = validate(tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "table 'suppression'" in res.stderr and "cannot be read" in res.stderr and "Traceback" not in res.stderr


def test_an_unterminated_quote_is_one_short_line(world_dir, tmp_path, validate):
    # finding: 9,001 lines of customer rows went to stderr (and into the job history)
    for f in world_dir.iterdir():
        if f.name != "customers.csv":
            (tmp_path / f.name).symlink_to(f)
    lines = (world_dir / "customers.csv").read_text().splitlines()
    lines[5] = lines[5].replace(",", ',"', 1)
    (tmp_path / "customers.csv").write_text("\n".join(lines) + "\n")
    res = validate(tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and len(res.stderr) < 250, res.stderr
    assert "table 'customers'" in res.stderr and "row 5" in res.stderr
