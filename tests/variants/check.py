"""Check that the checkout's build variants have not overwritten one another (issue 12, item 7).

    python tests/variants/check.py [VENV ...]      # default: every .venv* in the checkout

Only the release build is installed editable (`maturin develop` writes the extension into
python/ferroloop, one file per CPython ABI tag): `.venv` and the per-version `.venv-3.X` import it
from there. Every other variant (`.venv-debug`, `.venv-memcheck`) is a wheel built in its own cargo
target directory and installed, not editable, into its own venv. For each venv this asks its Python,
started from the repository root as `python -m pytest` is (so the current directory comes first on
`sys.path`), which `ferroloop._ferroloop` it imports, and checks where that file is, its ABI tag,
its profile (a debug build carries DWARF `.debug_info`, a release build is stripped of it) and
whether it is a leak-check build. Exits 1 on any mismatch: after `make test-debug`, `.venv` must
still run the release build.
"""

import json
import pathlib
import struct
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE_PACKAGE = ROOT / "python" / "ferroloop"
SID = ROOT / "tests" / "pythons" / "sid.sh"

# venv name -> (installed editable into python/ferroloop, profile, leak-check feature)
EXPECTED = {
    ".venv-debug": (False, "debug", True),
    ".venv-memcheck": (False, "debug", True),
}
RELEASE = (True, "release", False)  # .venv and .venv-3.X

# pytest puts the first conftest.py's folder without an __init__.py (tests/) first on sys.path.
PROBE = """
import json, sys, sysconfig
sys.path.insert(0, "tests")
import ferroloop._ferroloop as m
print(json.dumps({
    "file": m.__file__,
    "prefix": sys.prefix,
    "soabi": sysconfig.get_config_var("EXT_SUFFIX"),
    "leak_check": m._live_objects() is not None,
}))
"""


def elf_section_names(path):
    """The section names of a 64-bit little-endian ELF file."""
    data = pathlib.Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    strtab_off = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]
    names = []
    for i in range(shnum):
        name_off = struct.unpack_from("<I", data, shoff + i * shentsize)[0]
        start = strtab_off + name_off
        names.append(data[start : data.index(b"\0", start)].decode())
    return names


def check(venv):
    name = venv.name
    editable, profile, leak_check = EXPECTED.get(name, RELEASE)
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        print(f"{name}: not complete (no .installed stamp; being made?): skipped")
        return []
    command = [str(python), "-c", PROBE]
    if not python.exists():
        # A venv of the sid chroot's Pythons (3.14, 3.15): its interpreter is there, not here.
        if not python.is_symlink() or not SID.exists():
            return [f"{name}: no {python}"]
        command = ["bash", str(SID), "run", *command]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if editable and "No module named 'ferroloop" in proc.stderr:
            print(f"{name}: ferroloop is not built (skipped)")
            return []
        return [f"{name}: importing ferroloop._ferroloop failed:\n{proc.stderr}"]
    info = json.loads(proc.stdout)
    so = pathlib.Path(info["file"]).resolve()
    actual_profile = "debug" if ".debug_info" in elf_section_names(so) else "release"
    print(f"{name}: {so} ({actual_profile}{', leak-check' if info['leak_check'] else ''})")
    errors = []
    if editable and so.parent != SOURCE_PACKAGE:
        errors.append(f"{name}: expected the editable build in {SOURCE_PACKAGE}, imports {so}")
    if not editable and not so.is_relative_to(pathlib.Path(info["prefix"]).resolve()):
        errors.append(f"{name}: expected the copy installed in the venv, imports {so}")
    if not so.name.endswith(info["soabi"]):
        errors.append(f"{name}: {so.name} is not the extension of this Python ({info['soabi']})")
    if actual_profile != profile:
        errors.append(f"{name}: expected a {profile} build, {so} is a {actual_profile} build")
    if info["leak_check"] != leak_check:
        errors.append(f"{name}: expected leak-check {'on' if leak_check else 'off'}, {so} has it the other way")
    return errors


def main(argv):
    venvs = [pathlib.Path(a).resolve() for a in argv] or sorted(p for p in ROOT.glob(".venv*") if p.is_dir())
    errors = [e for venv in venvs for e in check(venv)]
    for error in errors:
        print("FAILED:", error, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
