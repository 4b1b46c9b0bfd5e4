"""The layers hold: imports point inward only (read from the source, not from runtime).

core            imports nothing of specrag outside core, and no framework
integrations    may import core; the two framework modules never import each other
bench           may import core; never the demo
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "specrag"
OUTER = ("specrag.integrations", "specrag.langchain", "specrag.llama_index", "specrag.cli", "specrag.demo",
         "specrag.render", "specrag.bench")  # fmt: skip
FRAMEWORKS = ("langchain", "langchain_core", "langchain_classic", "llama_index")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _offending(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{_module_name(path)} imports {name}"
        for path in paths
        for name in sorted(_imports(path))
        if any(name == bad or name.startswith(bad + ".") for bad in forbidden)
    ]


def test_the_import_reader_sees_relative_and_absolute_imports(tmp_path: Path) -> None:
    # The rule tests below pass vacuously if the reader missed imports: prove it sees them.
    engine = _imports(PACKAGE / "core" / "speckv" / "engine.py")
    assert "specrag.core.models" in engine  # from ..models import ...
    assert "specrag.core.speckv.policies" in engine  # from .policies import ...
    assert "torch" in engine
    assert "specrag.core.specpc.compressor" in _imports(PACKAGE / "core" / "specpc" / "__init__.py")


def test_core_imports_no_outer_layer_and_no_framework() -> None:
    assert _modules("core"), "no core modules found"
    assert _offending(_modules("core"), OUTER + FRAMEWORKS) == []


def test_bench_never_imports_the_demo_or_the_integrations() -> None:
    assert _offending(_modules("bench"), ("specrag.demo", "specrag.integrations", "specrag.cli")) == []


@pytest.mark.parametrize(("module", "other"), [("langchain", "llama_index"), ("llama_index", "langchain")])
def test_framework_adapters_never_import_each_other(module: str, other: str) -> None:
    path = PACKAGE / "integrations" / f"{module}.py"
    assert _offending([path], (f"specrag.integrations.{other}", f"specrag.{other}", other)) == []


@pytest.mark.parametrize("name", ["langchain", "llama_index"])
def test_the_0_1_import_paths_still_work(name: str) -> None:
    old = importlib.import_module(f"specrag.{name}")
    new = importlib.import_module(f"specrag.integrations.{name}")
    assert old.__all__ == new.__all__ and old.__all__
    for symbol in new.__all__:
        assert getattr(old, symbol) is getattr(new, symbol)


def test_the_top_level_api_is_what_0_1_exported() -> None:
    import specrag

    for symbol in ("SpecPC", "SpecPCSettings", "SpecKV", "SpecKVResult", "load_model", "build_tiny_model",
                   "LoadedModel", "CompressionResult", "CompressedDocument", "ScoredContext", "BUNDLES",
                   "list_bundles", "pull_bundle", "__version__"):  # fmt: skip
        assert hasattr(specrag, symbol), symbol


def test_the_version_is_written_once() -> None:
    import specrag

    pyproject = (PACKAGE.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and specrag.__version__ not in pyproject
    from importlib.metadata import version

    assert version("specrag") == specrag.__version__
