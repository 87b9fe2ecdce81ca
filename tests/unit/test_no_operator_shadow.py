"""The `operator/` folder must never shadow the standard library's `operator`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_stdlib_operator_and_our_operator_package_import_side_by_side() -> None:
    ours = str(REPO / "operator")
    script = (
        "import operator, spatialjoin_operator\n"
        "assert operator.itemgetter(1)([0, 7]) == 7\n"
        "assert 'site-packages' not in operator.__file__ and 'lib/python' in operator.__file__\n"
        f"assert spatialjoin_operator.__file__.startswith({ours!r})\n"
        "print(operator.__file__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert not result.stdout.startswith(str(REPO))


def test_no_importable_package_named_operator_in_the_repo() -> None:
    assert not (REPO / "operator" / "__init__.py").exists()
