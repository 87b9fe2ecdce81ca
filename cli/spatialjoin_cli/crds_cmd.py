"""`spatialjoin crds generate`: write the CRD YAML generated from the contract models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="CustomResourceDefinitions generated from the contract models.", no_args_is_help=True
)

CHART_CRDS = Path("charts") / "spatialjoin-operator" / "crds"


def repo_root() -> Path:
    """The checkout holding this package (editable install), else the working directory."""
    candidate = Path(__file__).resolve().parents[2]
    return candidate if (candidate / "pyproject.toml").exists() else Path.cwd()


def default_targets() -> list[Path]:
    """crds/ at the repository root, plus the chart's crds/ once the chart exists."""
    root = repo_root()
    targets = [root / "crds"]
    if (root / CHART_CRDS).is_dir():
        targets.append(root / CHART_CRDS)
    return targets


def stale_files(directory: Path, rendered: dict[str, str]) -> list[Path]:
    """Files in ``directory`` that differ from (or lack) the generated text."""
    return [
        directory / name
        for name, text in sorted(rendered.items())
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


@app.command()
def generate(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Directory to write to (default: crds/ and the chart's crds/)."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if any file is out of date.")
    ] = False,
) -> None:
    """Render spatialjoinjobs.yaml and workerpools.yaml from the pydantic models."""
    from spatialjoin_contracts.crd_generate import rendered_crds

    rendered = rendered_crds()
    targets = [out] if out is not None else default_targets()
    stale = [path for directory in targets for path in stale_files(directory, rendered)]
    if check:
        for path in stale:
            typer.echo(f"out of date: {path}", err=True)
        if stale:
            typer.echo("run `spatialjoin crds generate` and commit the result", err=True)
            raise typer.Exit(1)
        typer.echo("CRDs are up to date")
        return
    for directory in targets:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in sorted(rendered.items()):
            path = directory / name
            changed = path in stale
            path.write_text(text)
            typer.echo(f"{'wrote' if changed else 'unchanged'} {path}")


@app.command()
def docs(
    out: Annotated[Path | None, typer.Option("--out", help="File to write.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if the file is stale.")] = False,
) -> None:
    """Render the Markdown field reference of both CRDs (docs/crd-reference.md)."""
    from spatialjoin_contracts.crd_reference import render_reference

    path = out or repo_root() / "docs" / "crd-reference.md"
    text = render_reference()
    if check:
        if not path.is_file() or path.read_text() != text:
            typer.echo(f"out of date: {path}; run `spatialjoin crds docs`", err=True)
            raise typer.Exit(1)
        typer.echo("CRD reference is up to date")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    typer.echo(f"wrote {path}")
