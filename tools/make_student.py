"""Write the student edition: every chapter notebook without its worked solutions.

`make student` runs `python tools/make_student.py book student`. Each cell tagged `solution`
(the `solution-start` markdown, the code, the `solution-end` markdown; see CONTRIBUTING.md)
is removed with nbconvert's TagRemovePreprocessor, and an empty "your solution" code cell takes
the place of each removed solution. Outputs are cleared. The Colab install cell (the first code
cell, tagged `remove-cell` for the HTML book) is kept, so each student notebook still runs in
Colab. A solution directive left in an untagged cell is an error, never a silent leak.
"""

import argparse
import re
import sys
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ClearOutputPreprocessor, TagRemovePreprocessor

SOLUTION_TAG = "solution"
SOLUTION_DIRECTIVE = re.compile(r"^\s*(```+|:::+)\s*\{solution(-start|-end)?\}", re.M)
PLACEHOLDER = "# Your solution here.\n"


class StudentEditionError(ValueError):
    pass


def is_solution(cell):
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def student_notebook(nb, name="notebook"):
    """A copy of `nb` without solutions; raises StudentEditionError naming the cell on a leak."""
    nb = nbformat.from_dict(nb)
    cells, in_solution = [], False
    for cell in nb.cells:
        if is_solution(cell) and not in_solution:
            cells.append(nbformat.v4.new_code_cell(PLACEHOLDER))
        in_solution = is_solution(cell)
        cells.append(cell)
    nb.cells = cells
    resources = {}
    nb, resources = TagRemovePreprocessor(remove_cell_tags={SOLUTION_TAG}, enabled=True
                                          ).preprocess(nb, resources)
    nb, resources = ClearOutputPreprocessor(enabled=True).preprocess(nb, resources)
    for i, cell in enumerate(nb.cells):
        if SOLUTION_DIRECTIVE.search(cell.source):
            raise StudentEditionError(
                f"{name}: cell {i} ({cell.cell_type}) holds a solution directive but is not "
                f"tagged '{SOLUTION_TAG}'; tag every cell of the solution (see CONTRIBUTING.md)")
    code = [c for c in nb.cells if c.cell_type == "code" and c.source != PLACEHOLDER]
    if code and "google.colab" not in code[0].source:
        raise StudentEditionError(f"{name}: the first code cell is not the Colab install cell")
    return nb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", default="book", help="folder of chapter notebooks")
    ap.add_argument("dest", nargs="?", default="student", help="folder to write (replaced)")
    args = ap.parse_args(argv)
    src, dest = Path(args.src), Path(args.dest)
    notebooks = sorted(src.glob("*.ipynb"))
    if not notebooks:
        sys.exit(f"make_student: no notebooks in {src}")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.ipynb"):
        old.unlink()
    removed = 0
    try:
        for path in notebooks:
            nb = nbformat.read(path, as_version=4)
            student = student_notebook(nb, name=str(path))
            removed += sum(map(is_solution, nb.cells))
            nbformat.write(student, dest / path.name)
    except StudentEditionError as e:
        sys.exit(f"make_student: {e}")
    print(f"make_student: {len(notebooks)} notebooks -> {dest}/ "
          f"({removed} solution cells removed, Colab install cells kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
