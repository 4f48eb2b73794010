"""The harness asks the solver; it does not reach into solvers/ (issue 23 item 1, DESIGN.md
"Contracts: Solver"). Every module of pinnbench/ is parsed with ``ast`` (nothing is imported) and
may not import ``pinnbench.solvers`` or anything below it (solvers/ installs there), by an import
statement at any depth, ``importlib.import_module``/``__import__``, or a ``"module:function"``
target of an isolated process, unless it is on the allow-list below."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pinnbench"
SOLVERS = "pinnbench.solvers"

#: modules of pinnbench/ that may import pinnbench.solvers, each with why; any other one fails
ALLOWED = {
    # the plugin loader: it discovers and registers the built-in solver modules
    "pinnbench/solver.py",
}

#: "package.module:function", the form of an isolated process's target
_TARGET = re.compile(r"^([\w.]+):\w+$")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, package: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of everything ``path`` imports or names as a module to import; relative
    imports are resolved against ``package`` (default: the package ``path`` is in)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if package is None:
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the module's package
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__"):
            found.append((node.lineno, node.args[0].value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = _TARGET.match(node.value)
            if m:
                found.append((node.lineno, m.group(1)))
    return found


def _from_solvers(module: str) -> bool:
    return module == SOLVERS or module.startswith(SOLVERS + ".")


def test_the_harness_imports_nothing_from_solvers_outside_the_allow_list():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel in ALLOWED:
            continue
        offenders += [f"{rel}:{line} imports {module}" for line, module in _imported(path)
                      if _from_solvers(module)]
    assert not offenders, ("pinnbench/ reaches into solvers/; ask the solver through a hook on "
                           "pinnbench.solver.Solver instead:\n" + "\n".join(offenders))


def test_the_allow_list_names_modules_that_exist_and_still_import_solvers():
    """An entry that no longer imports pinnbench.solvers is removed, so the list only shrinks."""
    for rel in ALLOWED:
        path = PACKAGE.parent / rel
        assert path.is_file(), rel
        assert any(_from_solvers(m) for _, m in _imported(path)), rel


def test_the_check_sees_every_form_of_import(tmp_path):
    """The parser catches what it claims to: a real property, not that it ran."""
    probe = tmp_path / "probe.py"
    probe.write_text("import pinnbench.solvers.sdze\n"
              "def f():\n"
              "    from pinnbench.solvers._common import x\n"
              "    from .solvers import zo\n"
              "    from pinnbench import solvers\n"
              "    importlib.import_module('pinnbench.solvers.bp')\n"
              "    return measure('pinnbench.solvers._zo_diagnostics:run')\n"
              "from pinnbench import solver\n", encoding="utf-8")
    lines = sorted({line for line, m in _imported(probe, "pinnbench") if _from_solvers(m)})
    assert lines == [1, 3, 4, 5, 6, 7]


# -- no solver named in the harness's logic -------------------------------------------------------
#: string methods and container lookups whose argument, a solver's name, would branch on it
_LOOKUPS = {"startswith", "endswith", "isin", "get", "pop", "setdefault", "index", "count",
            "__contains__"}


def builtin_solver_names() -> set[str]:
    """The names of the solvers registered from solvers/ (not plugins other tests register)."""
    from pinnbench.solver import SOLVERS

    return {n for n in SOLVERS.names() if SOLVERS.get(n).__module__.startswith(SOLVERS_PKG)}


SOLVERS_PKG = SOLVERS + "."


def _names_solver(value, names: set[str]) -> bool:
    """A literal that names a solver: the name itself, a spec (``sdze[rank=4]``) or a label
    built on it (``sdze default``)."""
    return isinstance(value, str) and any(
        value == n or value.startswith((n + "[", n + " ")) for n in names)


def _literals(node) -> list:
    """The string constants ``node`` is or holds (a tuple, list or set of them)."""
    if isinstance(node, ast.Constant):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant)]
    return []


def solver_names_in_logic(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, literal) of every solver name used to decide something: compared (``==``,
    ``in``), looked up (``startswith``, ``isin``, ``get``, a subscript, a dict key), or held in
    a tuple/list/set of solver names (a family table such as ``("sdze", "zo")``). Docstrings,
    help texts and default values are not logic and pass."""
    tree = ast.parse(source)
    found = []

    def check(node, where) -> None:
        found.extend((where.lineno, v) for v in _literals(node) if _names_solver(v, names))

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                check(side, node)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in _LOOKUPS:
            for arg in node.args:
                check(arg, node)
        elif isinstance(node, ast.Subscript):
            check(node.slice, node)
        elif isinstance(node, ast.Dict):
            for key in node.keys:
                if key is not None:
                    check(key, key)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            values = _literals(node)
            if values and len(values) == len(node.elts) and all(
                    _names_solver(v, names) for v in values):
                check(node, node)
    return sorted(set(found))


def test_the_harness_names_no_builtin_solver_in_its_logic():
    """DESIGN.md "Contracts: Solver": what is solver-specific is a hook the harness asks, so a
    third-party solver gets every page and table on equal terms."""
    names = builtin_solver_names()
    assert {"bp", "sdze", "zo"} <= names
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        offenders += [f"{rel}:{line} names {value!r}" for line, value in
                      solver_names_in_logic(path.read_text(encoding="utf-8"), names)]
    assert not offenders, ("pinnbench/ decides by a solver's name; declare it on the solver "
                           "(a Solver hook) instead:\n" + "\n".join(offenders))


def test_the_name_check_sees_each_form():
    """Planted violations, one per form, each found; docstrings, help texts and defaults not."""
    names = {"sdze", "zo", "bp"}
    probe = '''"""sdze[rank=8] in a docstring"""
FAMILIES = ("sdze", "zo")
DEFAULT = "sdze,bp"
def f(df, name, spec, d):
    """a docstring naming bp"""
    ap.add_argument("--solvers", default="bp;sdze", help="e.g. sdze[rank=4]")
    if name == "bp":
        pass
    if spec.startswith("sdze"):
        pass
    x = df[df["solver_name"].isin(["zo"])]
    y = {"sdze default": 0}
    z = d.get("zo[crns=true]")
    w = d["bp"]
    return name in ("zo", "x")
'''
    got = solver_names_in_logic(probe, names)
    assert [line for line, _ in got] == [2, 2, 7, 9, 11, 12, 13, 14, 15]
    assert {v for _, v in got} == {"sdze", "zo", "bp", "sdze default", "zo[crns=true]"}
