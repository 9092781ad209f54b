"""Which design choice buys which speedup: leave-one-out variants of our MMoE training.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``).

Each variant undoes exactly one choice of the package and trains the same data for one
epoch from the same initial weights; the report is each variant's samples/s and how many
times faster the package's own configuration is.

* ``loop_experts``: experts and gates as separate ``nn.Linear`` stacks, run in a Python
  loop (as DeepCTR-Torch does) instead of stacked weights and batched matrix multiplies;
* ``rowwise_mixing``: mixing by ``torch.matmul((B, 1, E), (B, E, D))`` once per task (as
  DeepCTR-Torch does) instead of one ``bmm`` for all tasks;
* ``broadcast_mixing``: mixing by a broadcast multiply over ``(B, T, E, D)`` and a sum over
  ``E`` instead of one ``bmm`` for all tasks;
* ``dense_table_l2``: dense embedding gradients and L2 on the whole table every step
  (DeepCTR-Torch's ``l2_reg_embedding``), instead of sparse gradients and L2 on the rows
  the batch looked up; ``dense_rows_l2`` separates the two (dense gradients, row L2);
* ``dataloader``: a bare training loop fed by ``torch.utils.data.DataLoader`` over a
  ``TensorDataset`` against the same loop fed by one permutation per epoch and slices of
  pre-built tensors (both without L2, to isolate the data path).

The ``mixing`` entry times the mixing step alone (forward and backward) at a larger batch.
Shape letters: ``B`` batch, ``E`` experts, ``D`` expert output, ``G`` gates, ``T`` tasks.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ..data.schema import TASKS
from ..features.inputs import DenseFeature, EncodedFeatures, SparseFeature
from ..model.mmoe import MMoE
from ..model.config import ModelConfig, ModelOutput
from ..train.loop import TrainConfig, fit
from ..model.gates import broadcast_mix, mix, rowwise_mix
from ..train.losses import task_losses
from .data import load_data, prepare_data
from .machine import machine_info
from .run import check_json_path, utc_now, write_json

__all__ = ["ABLATIONS", "LoopExperts", "LoopGates", "AblatedMMoE", "run_ablation", "format_ablation"]

#: Variant name -> what it changes (against the package's configuration, "ours").
ABLATIONS = {
    "ours": "the taught path (mm.fit): stacked experts/gates, bmm mixing, sparse gradients + row L2 + Adagrad, "
            "pre-built tensors",
    "loop_experts": "experts and gates as separate nn.Linear stacks in a Python loop",
    "rowwise_mixing": "mixing by per-row matmul (B, 1, E) @ (B, E, D), once per task",
    "broadcast_mixing": "mixing by a broadcast multiply over (B, T, E, D) and a sum over E",
    "dense_rows_l2": "dense embedding gradients (sparse_embeddings=False), L2 on looked-up rows",
    "dense_table_l2": "dense embedding gradients and L2 on the whole table every step (DeepCTR-Torch's way)",
    "loop_prebuilt": "bare loop, no L2: one permutation per epoch, slices of pre-built tensors",
    "loop_dataloader": "bare loop, no L2: DataLoader(TensorDataset(ids, dense, labels), shuffle=True)",
}


class LoopExperts(nn.Module):
    """The stacked experts undone: one ``nn.Sequential`` of ``nn.Linear`` per expert, run in a
    Python loop and stacked, with the same weights. ``(B, I) -> (B, E, D)``."""

    def __init__(self, stacked):
        super().__init__()
        self.num_experts = stacked.num_stacks
        self.nets = nn.ModuleList(_unstack(stacked, s) for s in range(stacked.num_stacks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.nets], dim=1)  # (B, E, D)


class LoopGates(nn.Module):
    """The stacked gates undone: per gate an MLP, a bias-free linear map and a softmax. ``(B, I) -> (B, G, E)``."""

    def __init__(self, gates):
        super().__init__()
        self.num_experts, self.num_gates = gates.num_experts, gates.num_gates
        G, H, E = gates.out.shape
        mlps = [_unstack(gates.mlp, g) if gates.mlp is not None else nn.Identity() for g in range(G)]
        outs = []
        for g in range(G):
            lin = nn.Linear(H, E, bias=False)
            with torch.no_grad():
                lin.weight.copy_(gates.out[g].T)
            outs.append(lin)
        self.nets = nn.ModuleList(nn.Sequential(m, o) for m, o in zip(mlps, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x).softmax(-1) for net in self.nets], dim=1)  # (B, G, E)


def _unstack(stacked, s: int) -> nn.Sequential:
    layers = []
    for w, b in zip(stacked.weights, stacked.biases):
        lin = nn.Linear(w.shape[1], w.shape[2])
        with torch.no_grad():
            lin.weight.copy_(w[s].T)
            lin.bias.copy_(b[s])
        layers += [lin, type(stacked.activation)()]
    return nn.Sequential(*layers)


class AblatedMMoE(MMoE):
    """MMoE with one choice undone: ``loop_experts``, ``rowwise_mixing`` or ``broadcast_mixing``. Same
    initial weights as ``MMoE(config)``; with every flag off it computes exactly what MMoE computes."""

    def __init__(self, config: ModelConfig, loop_experts: bool = False, rowwise_mixing: bool = False,
                 broadcast_mixing: bool = False):
        super().__init__(config)
        if rowwise_mixing and broadcast_mixing:
            raise ValueError("choose one of rowwise_mixing and broadcast_mixing")
        self.loop_experts, self.rowwise_mixing, self.broadcast_mixing = loop_experts, rowwise_mixing, broadcast_mixing
        if loop_experts:
            self.experts = LoopExperts(self.experts)
            self.gates = LoopGates(self.gates)

    def forward(self, ids, dense=None) -> ModelOutput:
        if isinstance(ids, EncodedFeatures):
            ids, dense = ids
        x = self.inputs(ids, dense)  # (B, I)
        h = self.experts(x)  # (B, E, D)
        g = self.gates(x)  # (B, T, E)
        mixing = rowwise_mix if self.rowwise_mixing else broadcast_mix if self.broadcast_mixing else mix
        z = mixing(g, h)  # (B, T, D)
        return ModelOutput(self.towers(z), g)


def _loop_epoch(model, batches, optimizers, task_types) -> None:
    """The bare training step (no L2, no bookkeeping), fed by any iterable of batches."""
    model.train()
    for ids, dense, y in batches:
        out = model(ids, dense)
        loss = task_losses(out.logits, y, task_types).sum()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()


def _prebuilt_batches(x: EncodedFeatures, y: torch.Tensor, batch_size: int, generator: torch.Generator):
    order = torch.randperm(len(y), generator=generator)
    for start in range(0, len(y), batch_size):
        rows = order[start:start + batch_size]
        yield x.ids[rows], x.dense[rows], y[rows]


def _time_mixing(batch: int = 4096, tasks: int = 2, experts: int = 3, width: int = 128, repeats: int = 5) -> dict:
    """Forward + backward of the mixing step alone, in ms: the package's ``bmm``, the broadcast
    multiply-and-sum, and DeepCTR-Torch's per-task matmul. The gradient arriving from the towers
    has the towers' layout, ``(T, B, D)`` seen as ``(B, T, D)``, as in training."""
    g = torch.softmax(torch.randn(batch, tasks, experts), -1).requires_grad_()
    h = torch.randn(batch, experts, width, requires_grad=True)
    from_towers = torch.randn(tasks, batch, width).transpose(0, 1)  # (B, T, D), strided like the towers' gradient
    out = {}
    for name, fn in (("ours", mix), ("broadcast", broadcast_mix), ("rowwise", rowwise_mix)):
        times = []
        for i in range(repeats + 1):
            start = time.perf_counter()
            fn(g, h).backward(from_towers)
            if i:  # the first call is the warm-up
                times.append(time.perf_counter() - start)
        out[name + "_ms"] = 1e3 * statistics.median(times)
    out["speedup"] = out["rowwise_ms"] / out["ours_ms"]
    out["broadcast_speedup"] = out["broadcast_ms"] / out["ours_ms"]
    out["shape"] = {"B": batch, "T": tasks, "E": experts, "D": width}
    return out


def run_ablation(rows: int = 40_000, batch_size: int = 256, emb_dim: int = 16, repeats: int = 3, threads: int = 2,
                 seed: int = 0, json_path=None, log=print, command: str | None = None, data_path=None,
                 tables: str = "catalog") -> dict:
    """Train one epoch with each variant of :data:`ABLATIONS`, ``repeats`` times interleaved;
    report the median samples/s and how many times faster "ours" is."""
    check_json_path(json_path)
    torch.set_num_threads(int(threads))
    started = time.perf_counter()
    if data_path is None:
        import tempfile
        tmp = tempfile.TemporaryDirectory(prefix="mmoe_ablation_")
        data_path = Path(tmp.name) / "data.npz"
        log(f"generating and encoding {rows:,} rows ...")
        prepare_data(rows, data_path, seed, tables)
    meta, ids, dense, labels = load_data(data_path)
    n = meta["train_rows"]
    x = EncodedFeatures(torch.from_numpy(ids[:n]), torch.from_numpy(dense[:n]))
    y = torch.from_numpy(labels[:n])
    variants = _variants(meta, x, y, batch_size, emb_dim, seed)
    times = _time_variants(variants, repeats)
    records = _records(times, n, log)
    mixing = _time_mixing()
    result = {
        "meta": {"command": command or "python -m mmoe_annotated.bench --ablation", "date_utc": utc_now(),
                 "rows": meta["rows"], "train_rows": n, "batch_size": batch_size, "emb_dim": emb_dim,
                 "threads": threads, "repeats": repeats, "tables": meta.get("tables", "fitted"),
                 "table_rows": sum(meta["vocab_sizes"]), "machine": machine_info("cpu"),
                 "wall_seconds": time.perf_counter() - started},
        "records": records,
        "mixing": mixing,
    }
    log(f"  mixing alone (B=4096, forward+backward): bmm {mixing['ours_ms']:.2f} ms, broadcast "
        f"{mixing['broadcast_ms']:.2f} ms ({mixing['broadcast_speedup']:.1f}x), per-task matmul "
        f"{mixing['rowwise_ms']:.2f} ms ({mixing['speedup']:.1f}x)")
    write_json(result, json_path)
    return result


def _variants(meta: dict, x: EncodedFeatures, y: torch.Tensor, batch_size: int, emb_dim: int, seed: int) -> dict:
    """Variant name -> a function that builds a fresh model and returns its (untimed) epoch to run.
    The first is run once on a tenth of the rows first, as a warm-up."""
    feats = ([SparseFeature(nm, v, emb_dim) for nm, v in zip(meta["sparse"], meta["vocab_sizes"])]
             + [DenseFeature(nm, 1) for nm in meta["dense"]])
    sparse_cfg = ModelConfig(tuple(feats), task_names=tuple(TASKS), sparse_embeddings=True)
    dense_cfg = ModelConfig(tuple(feats), task_names=tuple(TASKS), sparse_embeddings=False)
    train = lambda **kw: TrainConfig(epochs=1, batch_size=batch_size, progress=False, **kw)

    def with_fit(model, cfg):
        return lambda: fit(model, (x, y), cfg)

    def with_loop(model, loader: bool):
        opts = [torch.optim.Adagrad(model.parameters(), lr=0.01)]
        if loader:
            data = torch.utils.data.TensorDataset(x.ids, x.dense, y)
            batches = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
        else:
            batches = _prebuilt_batches(x, y, batch_size, torch.Generator().manual_seed(seed))
        return lambda: _loop_epoch(model, batches, opts, sparse_cfg.task_types)

    n = max(len(y) // 10, batch_size)  # the warm-up: a tenth of the rows
    fit(MMoE(sparse_cfg), (x.index(slice(0, n)), y[:n]), train())
    return {
        "ours": lambda: with_fit(MMoE(sparse_cfg), train()),
        "loop_experts": lambda: with_fit(AblatedMMoE(sparse_cfg, loop_experts=True), train()),
        "rowwise_mixing": lambda: with_fit(AblatedMMoE(sparse_cfg, rowwise_mixing=True), train()),
        "broadcast_mixing": lambda: with_fit(AblatedMMoE(sparse_cfg, broadcast_mixing=True), train()),
        "dense_rows_l2": lambda: with_fit(MMoE(dense_cfg), train()),
        "dense_table_l2": lambda: with_fit(MMoE(dense_cfg), train(embedding_l2_mode="table")),
        "loop_prebuilt": lambda: with_loop(MMoE(sparse_cfg), loader=False),
        "loop_dataloader": lambda: with_loop(MMoE(sparse_cfg), loader=True),
    }


def _time_variants(variants: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per epoch of each variant, ``repeats`` times, the variants interleaved so that
    drifting load hits every variant alike."""
    times = {name: [] for name in variants}
    for _ in range(int(repeats)):
        for name, make in variants.items():
            step = make()
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def _records(times: dict[str, list[float]], n: int, log) -> list[dict]:
    baselines = {"loop_dataloader": "loop_prebuilt"}
    records = []
    for name, ts in times.items():
        med = statistics.median(ts)
        baseline = baselines.get(name, "ours")
        records.append({"variant": name, "what": ABLATIONS[name], "train_samples_per_s": n / med,
                        "seconds": ts, "baseline": baseline,
                        "baseline_speedup": med / statistics.median(times[baseline])})
        log(f"  {name:16s} {n / med:9,.0f} samples/s  ({baseline} is {records[-1]['baseline_speedup']:5.2f}x faster)")
    return records


def format_ablation(result: dict) -> str:
    m = result["meta"]
    lines = [f"ablation: one epoch on {m['train_rows']:,} rows, batch {m['batch_size']}, dim {m['emb_dim']}, "
             f"{m['threads']} threads, median of {m['repeats']}; embedding tables {m.get('tables', 'fitted')}"
             + (f" ({m['table_rows']:,} rows)" if "table_rows" in m else ""),
             f"{'variant':16s} {'samples/s':>10} {'baseline':>14} {'faster by':>9}  what"]
    for r in result["records"]:
        lines.append(f"{r['variant']:16s} {r['train_samples_per_s']:10,.0f} {r.get('baseline', 'ours'):>14} "
                     f"{r['baseline_speedup']:8.2f}x  {r['what']}")
    mx = result["mixing"]
    lines.append(f"mixing alone, forward+backward at B={mx['shape']['B']}: bmm {mx['ours_ms']:.2f} ms, broadcast "
                 f"{mx['broadcast_ms']:.2f} ms ({mx['broadcast_speedup']:.1f}x), per-task matmul "
                 f"{mx['rowwise_ms']:.2f} ms "
                 f"({mx['speedup']:.1f}x)")
    return "\n".join(lines)
