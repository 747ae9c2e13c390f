"""The module-cycle check of `make lint` finds cycles, and only cycles."""

import importlib.util
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("module_cycles", HERE / "module_cycles.py")
module_cycles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module_cycles)


def tree(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_cycle_through_crate_and_super_paths(tmp_path):
    src = tree(
        tmp_path,
        {
            "lib.rs": "mod a; mod t;",
            "a.rs": "use crate::t::x::Thing;",
            "t/mod.rs": "mod x; mod y;",
            "t/x.rs": "use super::y::Other; // crate::a in a comment does not count",
            "t/y.rs": "fn f() { crate::a::g(); }",
        },
    )
    assert module_cycles.cycles(module_cycles.dependencies(src)) == [["a", "t::x", "t::y"]]
    assert module_cycles.main(["x", str(src)]) == 1


def test_layers_pointing_down_pass(tmp_path):
    src = tree(
        tmp_path,
        {
            "lib.rs": "mod a; mod b; mod t;",
            "a.rs": "use crate::b;",
            "b.rs": "",
            "t/mod.rs": "mod x; use crate::b; pub fn shared() {}",
            "t/x.rs": "use super::shared; use crate::a;",  # a child using its parent is no cycle
        },
    )
    assert module_cycles.cycles(module_cycles.dependencies(src)) == []
    assert module_cycles.main(["x", str(src)]) == 0


def test_the_bindings_have_no_cycle():
    src = HERE.parents[1] / "crates" / "ferroloop-py" / "src"
    assert module_cycles.cycles(module_cycles.dependencies(src)) == []
