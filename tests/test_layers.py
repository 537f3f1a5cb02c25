"""The layers of docs/design.md, read from the code: imports only point down.

core/ (the training-time runtime) imports no training framework at module level and nothing
from report/, cli/ or integrations/; report/ imports nothing from cli/ or integrations/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "carbon_callbacks"
FRAMEWORKS = {
    "torch",
    "lightning",
    "pytorch_lightning",
    "keras",
    "tensorflow",
    "jax",
    "transformers",
    "nnunetv2",
    "nnunet",
    "wandb",
    "mlflow",
    "matplotlib",
}


def _module_level_imports(path: Path) -> list[str]:
    """Modules imported at module level (not inside functions or TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    names: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.append(node.module)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(tree.body)
    return names


def _files(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("path", _files("core"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_imports_no_framework_and_nothing_above_it(path):
    for name in _module_level_imports(path):
        assert name.split(".")[0] not in FRAMEWORKS, f"{path.name} imports {name}"
        assert not name.startswith(
            ("carbon_callbacks.report", "carbon_callbacks.cli", "carbon_callbacks.integrations")
        ), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", _files("report"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_report_imports_neither_the_commands_nor_the_integrations(path):
    for name in _module_level_imports(path):
        assert not name.startswith(("carbon_callbacks.cli", "carbon_callbacks.integrations"))
