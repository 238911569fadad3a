"""The control plane's modules import each other in one direction only: the graph of their
module-level imports (not those inside functions, nor those for the type checker) has no
cycle, so no import needs hiding inside a function to dodge one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTROL = ROOT / "control"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The control modules ``path`` imports when it is imported."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and not _type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                found.add(target)
                # ``from . import access`` imports a module, not a name
                found.update(f"{target}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    out: set[str] = set()
    for target in found:
        # importing a.b.c runs a and a.b first
        parts = target.split(".")
        out.update(
            m
            for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
            if m in modules and m != name
        )
    return out


def import_graph() -> dict[str, set[str]]:
    paths = sorted(CONTROL.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): top_level_imports(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)) is not None:
            return cycle
    return None


def test_the_graph_is_read_right() -> None:
    graph = import_graph()
    assert "control.appkeys" in graph["control.access"]
    assert "control.sessions.tokens" in graph["control.access"]
    assert "control.cases.store" in graph["control.cases.api"]
    # the package itself runs before its module
    assert "control.sessions" in graph["control.sessions.api"]
    # AppKeys import no other module of the control plane (their types only when checking)
    assert graph["control.appkeys"] == set()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_control_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_no_appkey_outside_appkeys() -> None:
    for path in CONTROL.rglob("*.py"):
        if path.name != "appkeys.py":
            assert "web.AppKey(" not in path.read_text(encoding="utf-8"), path


# -- handlers are thin: the SQL is in the stores ---------------------------------------------
# the modules that own SQL and may be handed a request: the connection's owner and access
SQL_OWNERS = {"control.db", "control.access", "control.auth"}


def _takes_request(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    return any(
        arg.annotation is not None and "Request" in ast.unparse(arg.annotation) for arg in args
    )


def request_functions_with_sql(source: str) -> list[str]:
    """The functions taking a ``web.Request`` that call ``.execute(`` themselves or in a
    closure or lambda of theirs."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _takes_request(node):
            if any(
                isinstance(inner, ast.Call)
                and isinstance(inner.func, ast.Attribute)
                and inner.func.attr in ("execute", "executemany", "executescript")
                for inner in ast.walk(node)
            ):
                found.append(f"{node.name}:{node.lineno}")
    return found


def test_the_sql_check_finds_sql_in_a_handler() -> None:
    handler = (
        "async def get(request: web.Request) -> web.Response:\n"
        "    def run(conn):\n"
        "        return conn.execute('SELECT 1').fetchone()\n"
        "    return await request.app[DB].run(run)\n"
        "async def thin(request: web.Request) -> web.Response:\n"
        "    return done(await request.app[DB].run(lambda c: store.one(c)))\n"
        "def store_function(conn: sqlite3.Connection) -> None:\n"
        "    conn.execute('SELECT 1')\n"
    )
    assert request_functions_with_sql(handler) == ["get:1"]


def test_no_handler_reaches_into_sql() -> None:
    offenders = {}
    for path in sorted(CONTROL.rglob("*.py")):
        name = module_name(path)
        if name in SQL_OWNERS or path.name == "store.py":
            continue
        found = request_functions_with_sql(path.read_text(encoding="utf-8"))
        if found:
            offenders[name] = found
    assert offenders == {}, "SQL in handlers; move it to the area's store: " + repr(offenders)


def test_the_supervisor_does_not_lean_on_the_benchmarks() -> None:
    """Workers bind port 0 and report the port they got: ``control/front.py`` imports nothing
    of ``bench`` (free_port) anywhere, nor starts a task no TaskSet owns."""
    tree = ast.parse((CONTROL / "front.py").read_text(encoding="utf-8"))
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not any(name == "bench" or name.startswith("bench.") for name in imported), imported
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not calls & {"asyncio.ensure_future", "asyncio.create_task", "loop.create_task"}


# -- the layers below the control plane ------------------------------------------------------
# the media plane, the recorder, the verifier and the documents know nothing of the control
# plane; the recorder and the verifier nothing of the documents either (the export's composite
# finds its own font: recorder/labels.py)
BELOW = {
    "mediaserver": ("control",),
    "recorder": ("control", "documents"),
    "verifier": ("control", "documents"),
    "documents": ("control",),
    "common": ("control", "documents", "recorder", "verifier"),
}


def every_import(source: str) -> set[str]:
    """Every module ``source`` names in an import, at any depth (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
    return found


def test_the_layers_below_do_not_import_the_ones_above() -> None:
    inside = "def f() -> None:\n    from control.i18n import text\n    import documents.fonts\n"
    assert every_import(inside) == {"control.i18n", "documents.fonts"}
    offenders = []
    for package, above in BELOW.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in every_import(path.read_text(encoding="utf-8")):
                if name.split(".")[0] in above:
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == [], offenders
