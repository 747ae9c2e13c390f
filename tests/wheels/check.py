"""Check the wheels `make wheel` built: their tag is the oldest glibc's we promise, and it is true.

Usage: python tests/wheels/check.py [--glibc 2.17] [--versions 3.11,...] WHEEL...

For each wheel:

- `auditwheel show` (printed as it reports it) must find the wheel consistent with
  manylinux_<glibc> and with no external library to bundle;
- independently of auditwheel, every shared object in the wheel is read with pyelftools (which
  auditwheel itself depends on): every glibc symbol version it requires, from its version-needs
  section, must be at most --glibc; the symbols that need a newer one are listed when not;
- the wheel's file name must carry the manylinux tag of that glibc.

It also checks that there is exactly one wheel for each of --versions. Exits 1 on any failure.
"""

import argparse
import io
import json
import pathlib
import re
import subprocess
import sys
import zipfile

from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection

GLIBC_VERSION = re.compile(r"^GLIBC_(\d+)\.(\d+)(?:\.(\d+))?$")


def glibc_tuple(name):
    match = GLIBC_VERSION.match(name)
    return tuple(int(part or 0) for part in match.groups()) if match else None


def glibc_needs(data):
    """{version name: [symbols]} of every GLIBC_* version an ELF image requires."""
    elf = ELFFile(io.BytesIO(data))
    needed = {}
    versym = verneed = dynsym = None
    for section in elf.iter_sections():
        if isinstance(section, GNUVerNeedSection):
            verneed = section
        elif isinstance(section, GNUVerSymSection):
            versym = section
        elif section.name == ".dynsym":
            dynsym = section
    if verneed is None:
        return needed
    # Version indexes (as the symbol-version table names them) of the GLIBC_* requirements.
    by_index = {}
    for _, auxiliaries in verneed.iter_versions():
        for aux in auxiliaries:
            if glibc_tuple(aux.name):
                by_index[aux["vna_other"]] = aux.name
                needed.setdefault(aux.name, [])
    if versym is not None and dynsym is not None:
        for number, symbol in enumerate(dynsym.iter_symbols()):
            index = versym.get_symbol(number)["ndx"]
            if isinstance(index, int) and (index & 0x7FFF) in by_index:
                needed[by_index[index & 0x7FFF]].append(symbol.name)
    return needed


def check_wheel(path, glibc):
    """A list of what is wrong with one wheel (empty when it passes)."""
    problems = []
    limit = glibc_tuple(f"GLIBC_{glibc}")
    tag = f"manylinux_{glibc.replace('.', '_')}_x86_64"
    shown = subprocess.run(["auditwheel", "show", str(path)], capture_output=True, text=True, check=False)
    print(shown.stdout.strip() or shown.stderr.strip(), flush=True)
    report = subprocess.run(["auditwheel", "show", "--json", str(path)], capture_output=True, text=True, check=False)
    if report.returncode != 0:
        return [f"auditwheel show failed: {report.stderr.strip()}"]
    audit = json.loads(report.stdout)
    if audit["overall_tag"] != tag:
        problems.append(f"auditwheel finds it consistent with {audit['overall_tag']}, not {tag}")
    if audit["external_libs"]:
        problems.append(f"it needs external libraries: {', '.join(sorted(audit['external_libs']))}")
    if tag not in path.name:
        problems.append(f"its file name does not carry {tag}")
    with zipfile.ZipFile(path) as wheel:
        objects = [name for name in wheel.namelist() if name.endswith(".so") or ".so." in name]
        if not objects:
            problems.append("it holds no shared object")
        for name in objects:
            for version, symbols in sorted(glibc_needs(wheel.read(name)).items(), key=lambda v: glibc_tuple(v[0])):
                if glibc_tuple(version) > limit:
                    problems.append(f"{name} needs {version} (newer than {glibc}) for {', '.join(sorted(symbols))}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glibc", default="2.17", help="the newest glibc version a wheel may need")
    parser.add_argument(
        "--versions", default="", help="Python versions (separated by spaces or commas) that must each have a wheel"
    )
    parser.add_argument("wheels", nargs="+", type=pathlib.Path)
    opts = parser.parse_args()
    failed = False
    for path in opts.wheels:
        problems = check_wheel(path, opts.glibc)
        for problem in problems:
            print(f"FAIL {path.name}: {problem}")
        if not problems:
            print(f"ok {path.name}: manylinux_{opts.glibc.replace('.', '_')}, no glibc symbol newer than {opts.glibc}")
        failed = failed or bool(problems)
    for version in opts.versions.replace(",", " ").split():
        abi = "cp" + version.replace(".", "")
        found = [p.name for p in opts.wheels if f"-{abi}-{abi}-" in p.name]
        if len(found) != 1:
            print(f"FAIL Python {version}: {len(found)} wheels ({', '.join(found) or 'none'}), one expected")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
