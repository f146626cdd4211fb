"""The import graph: the domain core at the bottom, Dagster and BentoML at the edges.

    churn (core)  <-  churn_assets stages, in pipeline order  <-  definitions, sensors, schedules
    churn (core)  <-  serving
    churn.model (the model as served) imports nothing else of the project: it travels with
    every logged model

Read from the source (every `import` statement, at any depth), plus one real import of the
service in a fresh interpreter to see what it loads.
"""

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from churn_assets_tests.conftest import REPOSITORY

# The pipeline's stages, earliest first: a stage may import an earlier one, never a later one.
STAGES = (
    "ingestion",
    "validation",
    "features",
    "training",
    "evaluation",
    "registry",
    "scoring",
    "monitoring",
)
# Modules of the code location that every stage may use: resources and shared helpers, which
# import only the core.
SHARED = ("resources", "storage", "telco", "markdown", "automation")
EDGES = ("dagster", "dagster_mlflow", "bentoml")


def imports(path: Path) -> Iterator[str]:
    """Every absolute module name `path` imports, at module level or inside functions."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def sources(package: str) -> list[Path]:
    files = sorted((REPOSITORY / package).rglob("*.py"))
    assert files, package
    return files


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_core_imports_neither_dagster_nor_bentoml_nor_its_adapters() -> None:
    wrong = [
        f"{path.relative_to(REPOSITORY)} imports {name}"
        for path in sources("churn")
        for name in imports(path)
        if top(name) in (*EDGES, "churn_assets", "serving")
    ]
    assert not wrong, wrong


def test_the_service_imports_nothing_from_the_code_location() -> None:
    wrong = [
        f"{path.relative_to(REPOSITORY)} imports {name}"
        for path in sources("serving")
        for name in imports(path)
        if top(name) in ("dagster", "dagster_mlflow", "churn_assets")
    ]
    assert not wrong, wrong


def test_the_model_package_imports_nothing_else_of_the_project() -> None:
    wrong = [
        f"{path.relative_to(REPOSITORY)} imports {name}"
        for path in sources("churn/model")
        for name in imports(path)
        if top(name) in ("churn", "churn_assets", "serving", *EDGES)
        and not name.startswith("churn.model")
    ]
    assert not wrong, wrong


def test_nothing_imports_a_private_module_of_dagster() -> None:
    wrong = [
        f"{path.relative_to(REPOSITORY)} imports {name}"
        for package in ("churn", "churn_assets", "serving")
        for path in sources(package)
        for name in imports(path)
        if top(name) in ("dagster", "dagster_mlflow")
        and any(part.startswith("_") for part in name.split(".")[1:])
    ]
    assert not wrong, wrong


def test_no_stage_imports_a_later_stage_and_shared_modules_import_no_stage() -> None:
    wrong = []
    for path in sources("churn_assets"):
        parts = path.relative_to(REPOSITORY / "churn_assets").with_suffix("").parts
        stage = parts[0] if len(parts) > 1 else None
        for name in imports(path):
            if top(name) == "serving":
                wrong.append(f"{path.name} imports the service: {name}")
            if top(name) != "churn_assets" or name.count(".") < 1:
                continue
            target = name.split(".")[1]
            if stage in STAGES and target in STAGES and STAGES.index(target) > STAGES.index(stage):
                wrong.append(f"stage {stage} ({path.name}) imports a later stage: {name}")
            if stage in STAGES and target not in (*STAGES, *SHARED):
                wrong.append(f"stage {stage} ({path.name}) imports the definitions: {name}")
            if stage is None and parts[0] in SHARED and target in STAGES:
                wrong.append(f"shared {path.name} imports a stage: {name}")
    assert not wrong, wrong


def test_starting_the_service_loads_no_dagster() -> None:
    probe = (
        "import sys, serving.service\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dagster', 'dagster_mlflow', 'churn_assets', 'mlflow', 'sklearn', 'lightgbm'))\n"
        "print('\\n'.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPOSITORY
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = set(result.stdout.split())
    assert not {m for m in loaded if m.startswith("dagster")}, loaded
    # `bentoml serve` imports the service in its arbiter too: the model's libraries are loaded
    # by the worker, with the model, not by every process that reads the service's settings.
    assert not {m for m in loaded if m.split(".")[0] in ("mlflow", "sklearn", "lightgbm")}
    assert not {m for m in loaded if m.split(".")[0] == "churn_assets"}, loaded
