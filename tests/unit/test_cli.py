"""The command line starts light: ``--help`` and ``import elizamesh`` load no runtime."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import elizamesh

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("shared.agent.runtime", "sqlalchemy", "faststream", "litestar", "openai", "pydantic")


def modules_loaded_by(code: str) -> list[str]:
    loaded = f"' '.join(m for m in {HEAVY!r} if m in sys.modules)"
    probe = f"{code}\nimport sys\nprint({loaded}, file=sys.stderr)"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stderr.split()


def test_the_command_line_and_the_package_load_no_runtime_until_used() -> None:
    assert modules_loaded_by("import elizamesh.cli") == []
    assert modules_loaded_by("import elizamesh") == []


def test_help_loads_no_runtime() -> None:
    code = "import sys\nsys.argv = ['elizamesh', '--help']\nfrom elizamesh.cli import app\n"
    code += "try:\n    app()\nexcept SystemExit:\n    pass"
    assert modules_loaded_by(code) == []


def test_every_public_name_is_the_object_of_the_module_it_comes_from() -> None:
    assert set(elizamesh.__all__) == set(elizamesh._MODULE_OF)
    for name in elizamesh.__all__:
        module = importlib.import_module(elizamesh._MODULE_OF[name])
        assert getattr(elizamesh, name) is getattr(module, name)
