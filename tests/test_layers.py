"""The layer rule, read from the source: the core imports no app, and each app imports only the core and itself.

Layers (by the first folder of a file's path):

* core ``xumx_slicq/``: imports the standard library, third-party packages and itself;
* apps ``train/``, ``export/``, ``submission/``, ``benchmark/``: the core, their own folder, and the above;
* entry scripts ``scripts/`` and ``predict.py``: anything first-party but the tests;
* ``tests/``: exempt.

"Imports" are every ``import``/``from ... import`` statement anywhere in a file (also inside functions), every
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name, and every literal module run with
``-m`` in a command list (``[sys.executable, "-m", "benchmark.x"]``): a subprocess is a dependency too.
"""

import ast
import pathlib
from typing import Iterator, List, Optional, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE = "xumx_slicq"
APPS = ("train", "export", "submission", "benchmark")
ENTRY = ("scripts", "predict")
TESTS = "tests"
FIRST_PARTY = {CORE, *APPS, *ENTRY, TESTS}
SKIP = {".venv", ".git", "__pycache__", "data", "runs", "out", ".pytest_cache", "build"}


def layer_of(path: pathlib.Path) -> str:
    """``core``, an app's name, ``entry`` or ``tests`` for a file given relative to the repository root."""
    top = path.parts[0] if len(path.parts) > 1 else path.stem
    if top == CORE:
        return "core"
    if top in APPS:
        return top
    if top in ENTRY:
        return "entry"
    if top == TESTS:
        return "tests"
    raise AssertionError(f"{path}: no layer for this file; add its folder to tests/test_layers.py")


def allowed(layer: str) -> set:
    """First-party top-level names a layer may import."""
    return {"core": {CORE}, "entry": {CORE, *APPS, *ENTRY}, "tests": set(FIRST_PARTY)}.get(layer, {CORE, layer})


def imported_modules(source: str) -> Iterator[Tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (relative imports stay in their package and
    are not listed)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.lineno, node.module
        elif isinstance(node, ast.Call):
            name = _call_name(node.func)
            if name in ("import_module", "__import__") and node.args and _literal(node.args[0]):
                yield node.lineno, _literal(node.args[0])
        elif isinstance(node, (ast.List, ast.Tuple)):
            items = [_literal(e) for e in node.elts]
            for flag, module in zip(items, items[1:]):
                if flag == "-m" and module:
                    yield node.lineno, module


def _call_name(func: ast.AST) -> Optional[str]:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _literal(node: ast.AST) -> Optional[str]:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def violations(path: pathlib.Path, source: str) -> List[str]:
    """The imports of ``source`` (the file at ``path``, relative to the root) that break the layer rule."""
    layer = layer_of(path)
    ok = allowed(layer)
    out = []
    for line, module in imported_modules(source):
        top = module.split(".")[0]
        if top in FIRST_PARTY and top not in ok:
            out.append(f"{path}:{line}: {layer} imports {module}")
    return out


def python_files() -> List[pathlib.Path]:
    files = [p.relative_to(ROOT) for p in ROOT.rglob("*.py")]
    return sorted(p for p in files if not SKIP & set(p.parts[:-1]))


def test_every_file_keeps_to_its_layer():
    files = python_files()
    assert any(p.parts[0] == CORE for p in files) and any(p.parts[0] == "export" for p in files)
    broken = [v for p in files if layer_of(p) != "tests" for v in violations(p, (ROOT / p).read_text())]
    assert not broken, "layer rule broken (core imports no app; an app imports only the core and itself):\n" + \
        "\n".join(broken)


@pytest.mark.parametrize("path,source", [
    ("xumx_slicq/backends.py", "def f():\n    from export.onnx_export import is_current\n"),
    ("xumx_slicq/baselines/x.py", "import benchmark.common as c\n"),
    ("xumx_slicq/x.py", "import importlib\nm = importlib.import_module('train.trainer')\n"),
    ("export/profile.py", "from benchmark.wiener_speed import _time\n"),
    ("benchmark/speed.py", "cmd = [sys.executable, '-m', 'submission', '--input', 'x']\n"),
    ("submission/runner.py", "from train import trainer\n"),
    ("xumx_slicq/engine.py", "from submission.runner import discover\n"),
    ("train/x.py", "import scripts.gpu_compare\n"),
    ("scripts/gpu_compare.py", "from tests.helpers import randomise_batchnorm\n"),
])
def test_a_cross_layer_import_is_caught(path, source):
    assert len(violations(pathlib.Path(path), source)) == 1


@pytest.mark.parametrize("path,source", [
    ("xumx_slicq/backends.py", "from .onnx_export import load_or_export\nimport numpy, torch.onnx\n"),
    ("export/__main__.py", "from export.profile import profile\nfrom xumx_slicq.files import write_json\n"),
    ("benchmark/speed.py", "cmd = [sys.executable, '-m', 'benchmark.speed', '--child']\n"),
    ("predict.py", "from xumx_slicq.engine import Engine\nfrom submission.base import MusicDemixingPredictor\n"),
])
def test_allowed_imports_pass(path, source):
    assert violations(pathlib.Path(path), source) == []
