"""Clear what running a notebook adds: `make strip` (the repository keeps notebooks without it).

Outputs, execution counts, the timing metadata Jupyter and nbconvert write into each cell
(`metadata.execution`), and the kernel's details in `language_info` (its name stays); tags and
everything else stay. Files that hold nothing to clear are not
rewritten.
"""

import argparse
import sys
from pathlib import Path

import nbformat


def strip(nb):
    """Clear `nb` in place; returns True when something was cleared."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count = [], None
            changed = True
        if "execution" in cell.metadata:
            del cell.metadata["execution"]
            changed = True
    info = nb.metadata.get("language_info")
    if info and set(info) - {"name"}:
        nb.metadata["language_info"] = {"name": info.get("name", "python")}
        changed = True
    return changed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="default: book/*.ipynb")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or sorted(Path("book").glob("*.ipynb"))
    cleared = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            nbformat.write(nb, path)
            cleared.append(path.name)
    print(f"strip: {len(cleared)} of {len(paths)} notebooks cleared" +
          (f" ({', '.join(cleared)})" if cleared else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
