"""``python -m mmoe_annotated.bench``: the benchmark's command line (see ``--help``)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from ..experiments.arguments import int_at_least, out_file, positive_int
from .ablation import format_ablation, run_ablation
from .core import worker
from .machine import check_device
from .prediction import PREDICTION_IMPLS, format_prediction, prediction_worker, run_prediction
from .report import format_table
from .run import run_benchmark
from .spec import IMPLS, MIN_ROWS, MODELS, BenchSpec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmoe_annotated.bench",
        description="Train one epoch and predict with this package's MMoE, by its taught code (mm.fit, mm.predict) "
                    "and its fast wing (mm.fast), and with DeepCTR-Torch 0.3.0's MMOE, on the same generated "
                    "ByteRec-format data; print samples/s, ratios, peak RSS and AUC.")
    parser.add_argument("--rows", type=int_at_least(MIN_ROWS), default=None, help="rows to generate (default 200,000; 40,000 with "
                        "--ablation; 30,000 with --quick); 80%% train, prediction covers all")
    parser.add_argument("--quick", action="store_true", help="a quick look: 30,000 rows")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--json", metavar="PATH", type=out_file, help="also write the results to this JSON file")
    parser.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[256, 4096], metavar="B")
    parser.add_argument("--emb-dims", type=positive_int, nargs="+", default=[4, 16], metavar="K")
    parser.add_argument("--impls", nargs="+", choices=IMPLS + ("compiled",), default=None,
                        help="taught (mm.fit / mm.predict), fast (mm.fast.*), deepctr (default: all three); with "
                             "--prediction: taught, fast and compiled (torch.compile), the default there")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="the taught path's models (default: all three; mmoe always runs)")
    parser.add_argument("--repeats", type=positive_int, default=None, help="timed runs per configuration; the median is "
                        "kept (default 3; 5 rounds with --prediction)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads on CPU (default 2)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the generated data")
    parser.add_argument("--tables", choices=("catalog", "fitted"), default="catalog",
                        help="embedding table rows: every id of the data's catalog (default; about 20k users, "
                             "100k items, 50k authors, 20k music ids) or only the ids the training rows show")
    parser.add_argument("--block-rows", type=positive_int, default=None, metavar="N",
                        help="the fast wing only: mm.fast.fit(block_rows=N), the most rows per forward/backward pass "
                             "(default: blocks of 1,024 on CPU); --block-rows 4096 trains batch 4096 in one pass")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--prediction", action="store_true",
                      help="instead: prediction alone by the taught path, the fast wing and torch.compile, "
                           "interleaved in one process per configuration, with compile times")
    mode.add_argument("--ablation", action="store_true",
                      help="instead: which design choice buys which speedup, at the first --batch-sizes and "
                           "the last --emb-dims value (default batch 256, dim 16)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one configuration in a fresh process
    parser.add_argument("--prediction-worker", help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.worker or args.prediction_worker:
        (worker if args.worker else prediction_worker)(json.loads(args.worker or args.prediction_worker))
        return 0
    check_device(args.device)
    command = ("python -m mmoe_annotated.bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))).strip()
    if args.ablation:
        if args.device != "cpu":
            raise SystemExit("--ablation runs on CPU only")
        result = run_ablation(rows=args.rows or 40_000, batch_size=args.batch_sizes[0], emb_dim=args.emb_dims[-1],
                              repeats=args.repeats or 3, threads=args.threads, seed=args.seed, tables=args.tables,
                              json_path=args.json, command=command)
        report = format_ablation(result)
    elif args.prediction:
        impls = args.impls or list(PREDICTION_IMPLS)
        if "deepctr" in impls:
            parser.error("--prediction times taught, fast and compiled, not deepctr")
        result = run_prediction(rows=args.rows or (30_000 if args.quick else 200_000),
                                batch_sizes=args.batch_sizes, emb_dims=args.emb_dims, impls=impls,
                                repeats=args.repeats or 5, threads=args.threads, device=args.device, seed=args.seed,
                                tables=args.tables, json_path=args.json, command=command)
        report = format_prediction(result)
    else:
        impls = args.impls or list(IMPLS)
        if "compiled" in impls:
            parser.error("compiled predicts only: time it with --prediction")
        spec = BenchSpec(rows=args.rows or (30_000 if args.quick else 200_000), batch_sizes=tuple(args.batch_sizes),
                         emb_dims=tuple(args.emb_dims), impls=tuple(impls),
                         models=tuple(dict.fromkeys(["mmoe", *args.models])), repeats=args.repeats or 3,
                         threads=args.threads, device=args.device, seed=args.seed, tables=args.tables,
                         block_rows=args.block_rows)
        report = format_table(run_benchmark(spec, json_path=args.json, command=command))
    print()
    print(report)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
