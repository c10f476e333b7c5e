"""The layering, read from the code (AST): arrows run one way, and pure logic imports neither
Mininet nor the OpenFlow framework.

    topologies/   scenarios, the pure plan, the Mininet Topo, OVS, relays   (the bottom)
    controller/   flow logic and the Ryu/os-ken apps      -> topologies
    gslb/         the DNS authority                       -> topologies
    lab/          a live network composed of the above    -> topologies, controller, gslb
    experiments/  runner, experiments, report, CLI        -> everything below

Every import counts, also one inside a function: a lazy import is still an arrow.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    "topologies": set(),
    "controller": {"topologies"},
    "gslb": {"topologies"},
    "lab": {"topologies", "controller", "gslb"},
    "experiments": {"topologies", "controller", "gslb", "lab"},
}
RUNTIMES = ("mininet", "ryu", "os_ken", "eventlet")
# Modules that may use a runtime: the Mininet Topo and relay node, the controller's glue, the
# live network's node classes and lifecycle, and the CLI (the Mininet CLI for `topo up`).
GLUE = {"topologies.topo", "topologies.relay.node", "controller.compat", "controller.shim",
        "controller.launch", "controller.l2app", "controller.vipapp", "lab.nodes", "lab.net",
        "lab.minimal", "experiments.cli", "experiments.labshell", "experiments.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for layer in ALLOWED for p in (ROOT / layer).rglob("*.py")}


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, at module level?, line) for every import statement of a file."""
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, id(node) in top, node.lineno))
            out += [(f"{node.module}.{a.name}", id(node) in top, node.lineno)
                    for a in node.names]
    return out


def resolve(name: str, modules) -> str | None:
    """The project module an imported name refers to (a module, or a name in one)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def upward_arrows(modules: dict[str, Path], edges) -> list[str]:
    """Every import of a module of a layer it may not import, as 'a -> b (file:line)'."""
    bad = []
    for src, dst, line in edges:
        a, b = src.split(".")[0], dst.split(".")[0]
        if a != b and b not in ALLOWED.get(a, set()):
            bad.append(f"{src} -> {dst} ({modules[src].relative_to(ROOT)}:{line})")
    return bad


def impure(modules: dict[str, Path], glue=frozenset(GLUE)) -> list[str]:
    """Modules outside the glue that reach a runtime: directly (any import), or through a
    module-level import of a project module that does (what importing them loads)."""
    direct, loads = {}, {}
    for name, path in modules.items():
        found = imports(path)
        direct[name] = [f"{m} (line {line})" for m, _, line in found
                        if m.split(".")[0] in RUNTIMES]
        loads[name] = {r for m, top, _ in found if top
                       for r in [resolve(m, modules)] if r and r != name}

    def reaches(name, seen=()):
        if direct[name]:
            return [f"{name} imports {direct[name][0]}"]
        for dep in sorted(loads[name]):
            if dep not in seen:
                chain = reaches(dep, seen + (name,))
                if chain:
                    return [f"{name} loads {dep}"] + chain
        return []
    out = []
    for name in sorted(modules):
        if name not in glue:
            chain = reaches(name)
            if chain:
                out.append(": ".join(chain))
    return out


def edges_of(modules):
    for name, path in modules.items():
        for imported, _, line in imports(path):
            target = resolve(imported, modules)
            if target and target != name:
                yield name, target, line


def test_no_layer_imports_one_above_it():
    modules = project_modules()
    assert len(modules) > 80, "the test did not find the project's modules"
    assert upward_arrows(modules, edges_of(modules)) == []


def test_pure_logic_imports_neither_mininet_nor_the_controller_runtime():
    modules = project_modules()
    for expected_pure in ("controller.vipswitch", "controller.vipflows", "controller.ofmsg",
                          "gslb.server", "topologies.plan", "lab.vip_config",
                          "experiments.report.build"):
        assert expected_pure in modules and expected_pure not in GLUE
    assert impure(modules) == []


def test_the_checks_catch_what_they_are_for(tmp_path, monkeypatch):
    """A topologies module importing the controller, and a pure module loading Mininet
    through another module, are both reported (so the two tests above can fail)."""
    modules = project_modules()
    fake = ROOT / "topologies" / "plan.py"
    edges = list(edges_of(modules)) + [("topologies.plan", "controller.vipflows", 1)]
    assert upward_arrows(modules, edges) == [
        f"topologies.plan -> controller.vipflows ({fake.relative_to(ROOT)}:1)"]
    shim = tmp_path / "shim.py"
    shim.write_text("import mininet.net\n")
    user = tmp_path / "user.py"
    user.write_text("from controller import shimmed\n")
    found = impure({"controller.shimmed": shim, "controller.user": user})
    assert found[0].startswith("controller.shimmed imports mininet.net")
    assert found[1].startswith("controller.user loads controller.shimmed")


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_every_layer_has_modules(layer):
    assert any(name.split(".")[0] == layer for name in project_modules())
