"""`spatialjoin crds|db|dataset` sub-commands that need no services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from spatialjoin_cli import crds_cmd, dataset_cmd, db_cmd
from spatialjoin_contracts import samples
from spatialjoin_contracts.crd_generate import rendered_crds
from spatialjoin_contracts.validation import check_pool_spec

pytestmark = pytest.mark.unit

cli = typer.Typer()
cli.add_typer(crds_cmd.app, name="crds")
cli.add_typer(db_cmd.app, name="db")
cli.add_typer(dataset_cmd.app, name="dataset")
runner = CliRunner()


def test_crds_generate_writes_both_files(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["crds", "generate", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name, text in rendered_crds().items():
        assert (tmp_path / name).read_text() == text
    again = runner.invoke(cli, ["crds", "generate", "--out", str(tmp_path)])
    assert "unchanged" in again.output and "wrote" not in again.output


def test_crds_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    runner.invoke(cli, ["crds", "generate", "--out", str(tmp_path)])
    assert (
        runner.invoke(cli, ["crds", "generate", "--out", str(tmp_path), "--check"]).exit_code == 0
    )
    (tmp_path / "workerpools.yaml").write_text("# edited by hand\n")
    result = runner.invoke(cli, ["crds", "generate", "--out", str(tmp_path), "--check"])
    assert result.exit_code == 1
    assert "workerpools.yaml" in result.output
    assert (tmp_path / "workerpools.yaml").read_text() == "# edited by hand\n"


def test_default_targets_are_the_repo_crds_and_the_chart_when_present() -> None:
    targets = crds_cmd.default_targets()
    assert targets[0] == crds_cmd.repo_root() / "crds"
    chart = crds_cmd.repo_root() / crds_cmd.CHART_CRDS
    assert (chart in targets) is chart.is_dir()


def test_db_migrate_without_a_url_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPATIALJOIN_DATABASE_URL", raising=False)
    result = runner.invoke(cli, ["db", "migrate"])
    assert result.exit_code == 2
    assert "SPATIALJOIN_DATABASE_URL" in result.output


def test_db_sql_prints_the_ddl() -> None:
    result = runner.invoke(cli, ["db", "sql"])
    assert result.exit_code == 0
    assert "CREATE TABLE IF NOT EXISTS spatial_async_jobs" in result.output


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_partition_map_file_is_a_valid_worker_pool_fragment(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"map{suffix}"
    dataset_cmd.write_partition_map(path)
    document = (
        json.loads(path.read_text()) if suffix == ".json" else yaml.safe_load(path.read_text())
    )
    assert len(document["partitionMap"]) == 12
    _, errors = check_pool_spec(samples.pool_spec(partitionMap=document["partitionMap"]))
    assert errors == []


def test_dataset_generate_rejects_an_unknown_scale() -> None:
    result = runner.invoke(cli, ["dataset", "generate", "--scale", "huge"])
    assert result.exit_code == 2
