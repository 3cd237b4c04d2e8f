"""The layout shows the architecture: the worker runtime (django_app/wsworker)
serves any Channels project, so it never imports the chat app, and no two
modules of the project import each other, directly or around a cycle.

Imports are read from the source (every `import`/`from` statement, including
those inside functions), so a lazy import cannot hide a dependency.
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
APP = ROOT / "django_app"
PACKAGES = ("chat", "config", "wsworker")


def module_name(path: pathlib.Path, app: pathlib.Path) -> str:
    parts = list(path.relative_to(app).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(app: pathlib.Path) -> dict[str, pathlib.Path]:
    found = {}
    for package in PACKAGES:
        for path in (app / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path, app)] = path
    return found


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Project modules that `name` imports (a `from pkg import mod` counts as pkg.mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph(app: pathlib.Path = APP) -> dict[str, set[str]]:
    modules = project_modules(app)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def test_the_layout_has_a_chat_app_and_a_worker():
    assert {p.name for p in APP.iterdir() if (p / "__init__.py").exists()} == set(PACKAGES)


def chat_imports_in_worker(graph) -> dict[str, list[str]]:
    found = {
        name: sorted(dep for dep in deps if dep.split(".")[0] in ("chat", "config"))
        for name, deps in graph.items() if name.split(".")[0] == "wsworker"
    }
    return {name: deps for name, deps in found.items() if deps}


def cycles_in(graph) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_worker_runtime_never_imports_the_chat_app():
    assert chat_imports_in_worker(import_graph()) == {}, "wsworker must not import the app"


def test_no_import_cycles_between_the_projects_modules():
    cycles = cycles_in(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_find_a_planted_chat_import_and_cycle(tmp_path):
    """The two checks above can fail: a lazy import of chat and a two-module cycle are found."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "chat" / "delivery").mkdir()
    (tmp_path / "chat" / "delivery" / "__init__.py").write_text("")
    (tmp_path / "wsworker" / "drain.py").write_text("def f():\n    from chat.delivery import writer\n")
    (tmp_path / "chat" / "delivery" / "writer.py").write_text("from . import fanout\n")
    (tmp_path / "chat" / "delivery" / "fanout.py").write_text("from .writer import Writer\n")
    graph = import_graph(tmp_path)
    assert chat_imports_in_worker(graph) == {"wsworker.drain": ["chat.delivery", "chat.delivery.writer"]}
    assert cycles_in(graph) == [["chat.delivery.fanout", "chat.delivery.writer", "chat.delivery.fanout"]]
