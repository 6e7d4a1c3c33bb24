"""The architecture the code promises: data flows one way, and no module holds a captcha geometry or alphabet."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "simcaptcha"

# Left to right: a module may import only modules to its left (inputs -> preprocess -> synth ->
# refiner -> recognizer -> solver -> service/contest), wherever in the module the import stands.
LAYERS = [
    "files", "quiet", "spec", "runs",
    "challenges", "preprocess", "viz", "domaingap",
    "synth", "look",
    "refiner", "simgan",
    "classifier", "fontfit", "estimate", "selftrain", "distill",
    "onnx_backend", "solver", "export",
    "raybatch", "service", "pipeline", "contest",
    "cli", "__main__", "__init__",
]


def simcaptcha_imports(path: Path) -> set[str]:
    """Every simcaptcha module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("simcaptcha."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("simcaptcha."))
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(LAYERS), f"place new modules in LAYERS: {modules ^ set(LAYERS)}"


def test_imports_flow_one_way():
    wrong = []
    for name in LAYERS:
        for imported in simcaptcha_imports(PACKAGE / f"{name}.py"):
            if imported in LAYERS and LAYERS.index(imported) >= LAYERS.index(name):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong


def test_no_module_level_geometry_or_alphabet():
    """No module-level constant holds an image size, a text length or an alphabet."""
    suspicious = ("HEIGHT", "WIDTH", "LENGTH", "ALPHABET", "NUM_CLASSES")
    found = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            for t in targets:
                if isinstance(t, ast.Name) and any(w in t.id for w in suspicious) and not t.id.startswith(("MAX_", "DEFAULT_")) and not t.id.endswith("_HELP"):
                    found.append(f"{path.name}: {t.id}")
    assert not found, found


def test_importing_synth_imports_nothing_that_imports_it_back():
    code = ("import sys, simcaptcha.synth; "
            "print(' '.join(sorted(m.split('.')[1] for m in sys.modules if m.startswith('simcaptcha.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "synth" in loaded
    right_of_synth = set(LAYERS[LAYERS.index("synth") + 1 :])
    assert not right_of_synth & set(loaded), loaded
