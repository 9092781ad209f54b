"""The command line of the experiments: ``python -m mmoe_annotated.experiments synthetic|census|merge|edges|funnel``.

Explained in chapter 8, "Reproducing the paper" (``book/08_reproducing_paper.ipynb``).

Writes into ``DIR``: ``results.csv`` (one row per model, lr, correlation, seed and
evaluation step), ``summary.csv`` (final losses per model, lr and correlation),
``run.json`` (the exact command, the settings, the machine and the wall time) and the
figures ``figure2_label_correlation.png``, ``figure4_loss_curves.png`` and
``figure5_final_loss_hist.png``. The defaults finish in a few minutes on 2 CPU cores;
``--seeds``, ``--steps``, ``--lrs``/``--lr`` and ``--correlations`` scale it toward the paper's
200 runs per setting, and ``--device cuda`` moves it to a GPU.

``census`` (chapter 9, ``book/09_census.ipynb``) and ``edges`` live in :mod:`~.census_cli`;
``merge`` joins census run folders made in parts (:mod:`~.merge`).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from .arguments import clear_outputs, correlation, int_at_least, out_folder, positive_float, positive_int
from .census_cli import add_census_parser, add_edges_parser, run_census_command, run_edges_command
from .provenance import machine
from .runner import PAPER_MODELS, SyntheticExperiment, num_parameters, run_synthetic

__all__ = ["parser", "main", "machine", "experiment_from_args", "run_synthetic_command", "run_census_command"]

DEFAULT = SyntheticExperiment()
#: What ``synthetic`` writes into its folder; ``run.json``, written last, says the run finished.
SYNTHETIC_OUTPUTS = ("results.csv", "summary.csv", "figure2_label_correlation.png", "figure4_loss_curves.png",
                     "figure5_final_loss_hist.png", "run.json")


def _model_lrs(text: str) -> tuple[str, tuple[float, ...]]:
    model, sep, values = text.partition("=")
    if not sep or model not in PAPER_MODELS:
        raise argparse.ArgumentTypeError(f"expected MODEL=LR[,LR...] with MODEL one of {sorted(PAPER_MODELS)}, "
                                         f"got {text!r}")
    return model, tuple(positive_float(v) for v in values.split(","))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mmoe_annotated.experiments",
                                 description="Experiments of 'The Annotated Multi-Task Ranker'.")
    sub = ap.add_subparsers(dest="experiment", required=True)
    _add_synthetic(sub)
    add_census_parser(sub)
    _add_merge(sub)
    add_edges_parser(sub)
    # its own flags live in mmoe_annotated.experiments.funnel (main hands them over)
    sub.add_parser("funnel", add_help=False,
                   help="the conversion funnel on Hillstrom (chapter 12): naive CVR, ESMM, MMoE, PLE")
    return ap


def _add_synthetic(sub) -> None:
    s = sub.add_parser("synthetic", help="the paper's synthetic study (MMoE vs OMoE vs Shared-Bottom)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--out", required=True, type=out_folder, help="output folder (created)")
    s.add_argument("--models", nargs="+", choices=sorted(PAPER_MODELS), default=list(DEFAULT.models))
    s.add_argument("--correlations", nargs="+", type=correlation, default=list(DEFAULT.correlations),
                   help="task correlations p = cos(w1, w2)")
    s.add_argument("--seeds", type=positive_int, default=DEFAULT.seeds, help="runs per model, lr and correlation")
    s.add_argument("--first-seed", type=int_at_least(0), default=DEFAULT.first_seed,
                   help="seeds are FIRST_SEED .. FIRST_SEED + SEEDS - 1 (chapter 8 picks lrs on 100-109)")
    s.add_argument("--steps", type=positive_int, default=DEFAULT.steps, help="Adam steps, each on a fresh batch")
    s.add_argument("--lrs", nargs="+", type=positive_float, default=[1e-2],
                   help="learning rates for every model")
    s.add_argument("--lr", action="append", type=_model_lrs, default=[], metavar="MODEL=LR[,LR...]",
                   help="learning rates of one model, overriding --lrs (repeatable)")
    s.add_argument("--batch-size", type=positive_int, default=DEFAULT.batch_size)
    s.add_argument("--eval-every", type=positive_int, default=DEFAULT.eval_every, help="steps between held-out evaluations")
    s.add_argument("--eval-samples", type=positive_int, default=DEFAULT.eval_samples, help="held-out rows per run")
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    s.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads; these small batched ops gain "
                   "little from more, and a shared machine loses a lot")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_merge(sub) -> None:
    m = sub.add_parser("merge", help="merge census run folders into one shipped run (chapter 10)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m.add_argument("folders", nargs="+", type=Path, help="output folders of census commands")
    m.add_argument("--out", required=True, type=out_folder, help="where NAME.csv.gz, NAME_gates.csv.gz, NAME.json go")
    m.add_argument("--name", required=True, help="the run's name for load_census_run")
    m.add_argument("--note", default="", help="how the parts were run, kept in NAME.json")
    m.add_argument("--column", action="append", default=[], metavar="SETTING",
                   help="a setting the parts may differ in, recorded as a column of the merged tables (repeatable)")


def experiment_from_args(args: argparse.Namespace) -> SyntheticExperiment:
    lrs = {m: tuple(args.lrs) for m in args.models}
    lrs.update({m: v for m, v in args.lr if m in lrs})
    try:
        return SyntheticExperiment(models=tuple(args.models), correlations=tuple(args.correlations),
                                   seeds=args.seeds, first_seed=args.first_seed, steps=args.steps, lrs=lrs,
                                   batch_size=args.batch_size, eval_every=args.eval_every,
                                   eval_samples=args.eval_samples, device=args.device)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def run_synthetic_command(args: argparse.Namespace, argv: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import report

    if args.threads < 1:
        raise SystemExit(f"error: --threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    exp = experiment_from_args(args)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)  # before the work: a folder that cannot be made fails now
    clear_outputs(out, SYNTHETIC_OUTPUTS)  # no earlier run's file stays beside this run's
    try:
        df = run_synthetic(exp, progress=not args.no_progress)
    except ValueError as e:  # e.g. --device cuda without CUDA
        raise SystemExit(f"error: {e}") from None
    df.to_csv(out / "results.csv", index=False)
    summary = report.summarize(df)
    summary.to_csv(out / "summary.csv", index=False)
    meta = {"command": "python -m mmoe_annotated.experiments " + shlex.join(argv),
            "seconds": round(df.attrs["seconds"], 1), "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                                     time.gmtime()),
            "machine": machine(exp.device), "settings": exp.to_dict(), "num_parameters": num_parameters()}

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    report.plot_label_correlation(ax, exp.data)
    fig.tight_layout()
    fig.savefig(out / "figure2_label_correlation.png", dpi=120)
    for name, plot in (("figure4_loss_curves.png", report.plot_loss_curves),
                       ("figure5_final_loss_hist.png", report.plot_final_histograms)):
        axes = plot(df)
        axes[0].figure.tight_layout()
        axes[0].figure.savefig(out / name, dpi=120)
    plt.close("all")
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")  # last: the run finished

    with_pd = summary.round(4).to_string(index=False)
    print(f"{len(df)} rows in {meta['seconds']} s -> {out}/results.csv\n{with_pd}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["funnel"]:  # `funnel --out DIR [--seeds N] [--models ...]`
        from .funnel import _main as funnel_main
        funnel_main(argv[1:])
        return 0
    args = parser().parse_args(argv)
    if args.experiment == "synthetic":
        return run_synthetic_command(args, argv)
    if args.experiment == "census":
        return run_census_command(args, argv)
    if args.experiment == "edges":
        return run_edges_command(args)
    if args.experiment == "merge":
        from .merge import merge_census_runs
        try:
            record = merge_census_runs(args.folders, args.out, args.name, args.note, args.column)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        print(f"{args.name}: {len(record['parts'])} parts -> {args.out}")
        return 0
    raise AssertionError(args.experiment)  # argparse's required subcommand makes this unreachable
