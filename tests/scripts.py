"""The project's extension-less Python scripts (scripts/*) as modules, for the tests that use their code."""
import importlib.machinery
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(name: str):
    """scripts/<name> as a module named after it."""
    module_name = name.replace("-", "_") + "_script"
    loader = importlib.machinery.SourceFileLoader(module_name, str(ROOT / "scripts" / name))
    spec = importlib.util.spec_from_loader(module_name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
