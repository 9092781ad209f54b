"""Experiments built on the package's public API: the paper's synthetic study and its Census-Income study.

Explained in chapter 8, "Reproducing the paper" (``book/08_reproducing_paper.ipynb``), and chapter 9,
"The paper on real data: Census-Income" (``book/09_census.ipynb``).
Run from a shell with ``python -m mmoe_annotated.experiments synthetic|census --out DIR``.

===================  ============================================================================================
module               what
===================  ============================================================================================
``batched``          :class:`StackedRuns`: many independent runs trained as one model
``runner``           :class:`SyntheticExperiment`, :func:`run_synthetic`: the grid and its training
``report``           summaries (means, medians, stuck runs) and the Figure 2, 4, 5 analogues
``census``           the paper's Census-Income study (Tables 1 and 2; chapter 9): its runs; lists the three below
``census_protocol``  its settings (``CensusExperiment``), data, and the training of one family and seed
``census_search``    its hyper-parameter grid, the search and ``choose``
``census_report``    the shipped runs, summaries against the paper's tables, paired differences, figures
``merge``            :func:`merge_census_runs`: run folders made in parts, merged into one shipped run
``cli``              the command line
``seesaw``           :func:`run_seesaw`: Shared-Bottom, MMoE, CGC and PLE, task 1 against task 2 (chapter 10)
===================  ============================================================================================
"""
from .batched import StackedRuns
from .runner import PAPER_MODELS, RESULT_COLUMNS, SyntheticExperiment, num_parameters, paper_model_config, run_synthetic
from . import report

__all__ = ["StackedRuns", "PAPER_MODELS", "RESULT_COLUMNS", "SyntheticExperiment", "num_parameters",
           "paper_model_config", "run_synthetic", "report"]
