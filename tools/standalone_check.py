"""Run every chapter as Colab does: alone, with only the installed package beside it.

1. build a wheel of the package (`pip wheel --no-deps`, from a clean copy of its sources);
2. make a fresh virtual environment with one of these sets of library versions (`--versions`):
   - `colab`: the versions Colab has installed (COLAB below), then the wheel installed the
     way the notebooks' Colab cell installs it (`pip install "mmoe-annotated @ <wheel>"`, no
     constraints), and a check that pip changed none of the versions already there;
   - `oldest`: the oldest versions `pyproject.toml` allows that install here (OLDEST), the
     wheel installed the same way;
   - `pinned`: every dependency at the version of the project's `.venv`;
   torch is the `.venv`'s in every set (the CPU wheel this machine has; Colab's is a CUDA build);
   the wheels come from a wheelhouse shared by every run (`_build/wheelhouse`, `--wheelhouse`):
   each set is installed from it alone (`--no-index`), and only when that fails (a version it
   does not hold yet) does `pip wheel` add what is missing, from the configured indexes, and
   the install is tried again; so the Colab and oldest checks of one `make test` fetch torch
   and their common packages once, and a second `make test` fetches nothing. The unpinned
   dependencies (the kernel's, torch's) stay at the versions first fetched: `rm -r
   _build/wheelhouse` (or `make clean`) to take newer releases;
3. copy each notebook alone into an empty temporary directory and execute it there with
   nbclient, two at a time; a last cell asserts the kernel imported `mmoe_annotated` from the
   fresh environment, not from the repository.
The notebooks are those the Colab buttons open (`colab/book/*.ipynb`, `make colab`). A chapter
that reads a file from the repository, needs code that is not in the package, or uses an API
the older libraries lack fails here. Executed copies are kept in `<work>/executed/`.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "LICENSE-text")

# Colab's preinstalled versions, from googlecolab/backend-info's pip-freeze.txt (2026-08-19,
# Python 3.13 there; these install here on 3.11). Update them when Colab moves.
# scipy was added later, at the release that shipped beside these (not read from that file).
COLAB = ("numpy==2.1.3", "pandas==2.2.3", "scikit-learn==1.6.1", "scipy==1.16.1", "matplotlib==3.10.0",
         "tqdm==4.67.3")
# The lower bounds of pyproject.toml's dependencies, each at its oldest release that has a
# wheel for this Python (torch excepted: see above).
OLDEST = ("numpy==1.24.0", "pandas==2.0.0", "scikit-learn==1.3.0", "scipy==1.15.0", "matplotlib==3.7.0",
          "tqdm==4.60.0")
# The kernel stack of both: Colab's IPython and ipykernel (a current IPython drops names that
# matplotlib 3.7 imports, so the newest kernel cannot stand in for an old environment).
KERNEL = ("ipython==7.34.0", "ipykernel==6.17.1")
VERSION_SETS = {"colab": COLAB, "oldest": OLDEST, "pinned": None}

# Runs inside the fresh environment: execute one notebook in its own folder.
RUNNER = r"""
import sys, nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
src, out = sys.argv[1], sys.argv[2]
nb = nbformat.read(src, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(
    "import sys, mmoe_annotated\n"
    "assert mmoe_annotated.__file__.startswith(sys.prefix), mmoe_annotated.__file__\n"
    "print('standalone: mmoe_annotated from', mmoe_annotated.__file__)"))
client = NotebookClient(nb, timeout=600, kernel_name="python3",
                        resources={"metadata": {"path": "."}})
try:
    client.execute()
except CellExecutionError as e:
    print(str(e)[-3000:], file=sys.stderr)
    sys.exit(1)
finally:
    nbformat.write(nb, out)
"""


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(cmd, check=True, **kw):
    """Run quietly; on failure show the tail of what the command said, then stop (unless
    `check` is false: then the caller reads the return code)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode and check:
        said = (proc.stdout + proc.stderr).strip().splitlines()
        sys.exit(f"standalone_check: {' '.join(map(str, cmd[:6]))} ... failed "
                 f"(exit {proc.returncode}):\n" + "\n".join(said[-30:]))
    return proc


def installed(vpy):
    """{normalised name: version} of the packages in the venv of `vpy`."""
    out = run([str(vpy), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"]).stdout
    return {l.split("==")[0].lower().replace("_", "-"): l.split("==")[1]
            for l in out.splitlines() if "==" in l}


def install_from_wheelhouse(pip, requirements, wheelhouse, constraints=None):
    """`pip install` the requirements from the wheelhouse alone; when it lacks one of them,
    `pip wheel` them into it (files already there are not fetched again) and install again.
    `pip` is a fresh venv's `python -m pip install ...`; returns "wheelhouse" or "downloaded"."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    con = ["-c", str(constraints)] if constraints else []
    offline = [*pip, "--no-index", "--find-links", str(wheelhouse), *con, *requirements]
    if run(offline, check=False).returncode == 0:
        return "wheelhouse"
    # `pip wheel` keeps a wheel as it is (one already in the wheelhouse is not fetched again)
    # and builds one from an sdist, which could not be built offline. pip's own HTTP cache
    # would not do: an index that sends no cache headers (this machine's proxy) leaves it empty.
    run([pip[0], "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(wheelhouse),
         "--find-links", str(wheelhouse), *con, *requirements])
    run(offline)
    return "downloaded"


def build_env(repo, work, python, versions="pinned", wheelhouse=None):
    """Wheel + fresh venv with the `versions` set; returns the venv's python. The libraries
    come from `wheelhouse` (default `<repo>/_build/wheelhouse`), filled on first use."""
    wheelhouse = Path(wheelhouse or repo / "_build" / "wheelhouse")
    dist = work / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    t = time.monotonic()
    # Build from a clean copy, as pip does from a git clone in Colab: an in-tree build would
    # reuse build/lib, where a module deleted from the sources can linger and mask a failure.
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in PACKAGE_FILES:
        if (repo / name).is_file():
            shutil.copy(repo / name, src / name)
    shutil.copytree(repo / "mmoe_annotated", src / "mmoe_annotated",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    run([python, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(dist)])
    wheels = list(dist.glob("mmoe_annotated-*.whl"))
    if len(wheels) != 1:
        sys.exit(f"standalone_check: expected one mmoe_annotated wheel in {dist}, found {wheels}")
    print(f"standalone_check: built {wheels[0].name} in {time.monotonic() - t:.1f} s")

    t = time.monotonic()
    venv = work / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    run([python, "-m", "venv", str(venv)])
    vpy = venv / "bin" / "python"
    # Pin every dependency to what the project's .venv was tested with.
    frozen = run([python, "-m", "pip", "freeze", "--exclude-editable"]).stdout
    constraints = work / "constraints.txt"
    constraints.write_text("".join(line + "\n" for line in frozen.splitlines()
                                   if "==" in line and not line.startswith("mmoe"))
                           )
    pip = [str(vpy), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
    # --no-compile: byte-compiling all of torch costs more than the few modules a chapter imports.
    if VERSION_SETS[versions] is None:
        deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
        source = install_from_wheelhouse(pip, [*deps, "ipykernel", "nbclient", "nbformat"],
                                         wheelhouse, constraints)
        run(pip + ["--no-index", "-c", str(constraints), str(wheels[0])])  # its dependencies are in
    else:
        torch = [l for l in frozen.splitlines() if l.lower().startswith("torch==")]
        source = install_from_wheelhouse(
            pip, [*VERSION_SETS[versions], *torch, *KERNEL, "nbclient", "nbformat"], wheelhouse)
        before = installed(vpy)
        # As the notebooks' first cell does in Colab: the package by URL, nothing else named.
        run(pip + [f"mmoe-annotated @ {wheels[0].resolve().as_uri()}"])
        after = installed(vpy)
        changed = sorted(f"{n} {v} -> {after.get(n)}" for n, v in before.items() if after.get(n) != v)
        if changed:
            sys.exit("standalone_check: installing the package changed versions that were already "
                     "installed (Colab would reinstall them): " + ", ".join(changed))
        wanted = {s.split("==")[0]: s.split("==")[1] for s in VERSION_SETS[versions]}
        print("standalone_check: " + versions + " versions: " + ", ".join(
            f"{n} {after.get(n)}" for n in [*wanted, "torch", "ipython", "ipykernel"]))
    print(f"standalone_check: fresh venv with the wheel in {time.monotonic() - t:.1f} s "
          f"({'from the wheelhouse' if source == 'wheelhouse' else 'fetched into the wheelhouse'} "
          f"{wheelhouse})")
    return vpy


def execute(vpy, notebook, out_dir):
    """Run one notebook alone in an empty temp dir; returns (ok, seconds, log)."""
    t = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="standalone-") as tmp:
        shutil.copy(notebook, Path(tmp) / notebook.name)
        data_dir = Path(tmp) / ".jupyter-data"  # no user kernelspec may shadow the venv's
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "JUPYTER_PATH", "PYTHONHOME")}
        env.update(MPLBACKEND="Agg", JUPYTER_DATA_DIR=str(data_dir),
                   JUPYTER_PATH=str(vpy.parent.parent / "share" / "jupyter"),
                   OMP_NUM_THREADS="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
        proc = subprocess.run([str(vpy), "-c", RUNNER, notebook.name,
                               str((out_dir / notebook.name).resolve())],
                              cwd=tmp, env=env, capture_output=True, text=True)
    return proc.returncode == 0, time.monotonic() - t, proc.stderr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks to run (default: book/*.ipynb)")
    ap.add_argument("--repo", default=".")
    ap.add_argument("--work", default=None, help="default: _build/standalone-<versions>")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--versions", choices=sorted(VERSION_SETS), default="colab",
                    help="library versions of the fresh venv (default colab)")
    ap.add_argument("--wheelhouse", default=None,
                    help="wheels shared by every run, fetched once (default: <repo>/_build/wheelhouse)")
    args = ap.parse_args(argv)

    repo = Path(args.repo).resolve()
    colab_dir = repo / "colab" / "book"
    notebooks = [Path(n).resolve() for n in args.notebooks] or sorted(
        (colab_dir if colab_dir.is_dir() else repo / "book").glob("*.ipynb"))
    if not notebooks:
        sys.exit("standalone_check: no notebooks found")
    work = Path(args.work or f"_build/standalone-{args.versions}").resolve()
    out_dir = work / "executed"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    t0 = time.monotonic()
    vpy = build_env(repo, work, sys.executable, args.versions,
                    Path(args.wheelhouse).resolve() if args.wheelhouse else None)

    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        for nb, (ok, secs, log) in zip(notebooks, pool.map(lambda n: execute(vpy, n, out_dir), notebooks)):
            print(f"{'ok  ' if ok else 'FAIL'} {nb.name:36s} {secs:5.1f} s")
            if not ok:
                failed += 1
                print("       " + "\n       ".join(ANSI.sub("", log).strip().splitlines()[-25:]))
    print(f"standalone_check: {len(notebooks)} notebooks in {time.monotonic() - t0:.1f} s "
          f"(executed copies in {out_dir})")
    print(f"standalone_check: {len(notebooks) - failed} passed, {failed} failed "
          f"({args.versions} versions, {time.monotonic() - t0:.0f} s in all)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
