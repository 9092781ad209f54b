"""The tutorial's example, end to end, with ``mmoe_annotated``.

Yuan Meng's "The Annotated Multi-Task Ranker" runs DeepCTR-Torch's ``MMOE`` on ByteRec:
label-encode 8 ID columns, min-max scale ``duration_time``, split 80/20 by row order,
MMOE with its defaults (embedding dim 4), Adagrad, batch 32, 10 epochs, then test log
loss and AUC for ``finish`` and ``like``. This script does the same with the package,
with one deliberate difference: the encoder is fit on the **training split only**
(unseen test IDs map to the OOV id instead of leaking test rows into the encoders).

    python examples/tutorial_byterec.py                                   # the embedded, synthetic dataset
    python examples/tutorial_byterec.py --byterec ../shared/data/byterec_sample.txt   # the real 200-row sample

The embedded dataset is synthetic (``mm.load_example``); ``--rows`` sets its size.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--byterec", type=Path, default=None, metavar="PATH",
                   help="a ByteRec file (12 tab-separated columns, no header); default: the embedded dataset")
    p.add_argument("--rows", type=int, default=5000,
                   help="rows of the embedded (synthetic) dataset when no --byterec is given (default 5000)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (tutorial: 10)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (tutorial: 32)")
    p.add_argument("--seed", type=int, default=1024, help="seed of the weights and of the shuffling")
    p.add_argument("--progress", action="store_true", help="show a tqdm progress bar per epoch")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import mmoe_annotated as mm  # after parsing, so that --help answers at once

    started = time.perf_counter()
    if args.byterec is not None:
        df = mm.load_byterec(args.byterec)
        source = str(args.byterec)
    else:
        df = mm.load_example(n_rows=args.rows)
        source = f"embedded synthetic dataset, {args.rows} rows"

    # 80/20 by row order (rows are in time order), encoders fit on the training rows only.
    train, test = mm.split_by_row(df, 0.8)
    encoder = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, emb_dim=4).fit(train)

    # DeepCTR-Torch's MMOE defaults: 3 experts (256, 128), gates (64,), towers (64,).
    model = mm.MMoE(mm.ModelConfig(encoder.features, task_names=mm.TASKS, seed=args.seed))
    config = mm.TrainConfig(optimizer="adagrad", batch_size=args.batch_size, epochs=args.epochs,
                            seed=args.seed, progress=args.progress)
    mm.fit(model, train, config, encoder=encoder)
    metrics = mm.evaluate(model, test, encoder=encoder)

    print(f"data: {source} ({len(train)} train rows, {len(test)} test rows)")
    for task in mm.TASKS:
        print(f"{task} test LogLoss {metrics[task]['logloss']:.4f}")
        print(f"{task} test AUC {metrics[task]['auc']:.4f}")
    print(f"({time.perf_counter() - started:.1f} s)")
    return metrics


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:  # DataError included: bad files and arguments get one clear line
        sys.exit(f"error: {exc}")
