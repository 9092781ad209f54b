"""``python -m mmoe_annotated.experiments synthetic --out DIR``: the paper's synthetic study.

Explained in chapter 8, "Reproducing the paper" (``book/08_reproducing_paper.ipynb``).
"""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
