"""The benchmark's report: its targets against what was measured, and the printed tables.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``).
"""
from __future__ import annotations

import shlex
from pathlib import PurePath

from .spec import OMOE_WITHIN, TARGETS, TARGETS_CUDA, TARGETS_TAUGHT

__all__ = ["targets_report", "format_table", "shown_command"]


def _impl(record: dict) -> str:
    """A record's implementation; runs written before the taught path was timed say "ours" for the
    package's fastest code, which is the fast wing's."""
    return "fast" if record["impl"] == "ours" else record["impl"]


def _by_config(result: dict):
    """(batch, dim, {(impl, model): record}) for every configuration that ran."""
    keys = sorted({(r["batch_size"], r["emb_dim"]) for r in result["records"]})
    for bs, dim in keys:
        yield bs, dim, {(_impl(r), r.get("model", "mmoe")): r for r in result["records"]
                        if (r["batch_size"], r["emb_dim"]) == (bs, dim)}


def _ratio_targets(result: dict, impl: str, targets) -> list[dict]:
    out = []
    for what, bs_want, dim_want, need in targets:
        for bs, dim, runs in _by_config(result):
            ours, theirs = runs.get((impl, "mmoe")), runs.get(("deepctr", "mmoe"))
            if ours is None or theirs is None or (bs_want and bs != bs_want) or (dim_want and dim != dim_want):
                continue
            ratio = ours[f"{what}_samples_per_s"] / theirs[f"{what}_samples_per_s"]
            out.append({"impl": impl, "what": what, "batch_size": bs, "emb_dim": dim, "required": need,
                        "ratio": ratio, "met": ratio >= need})
    return out


def targets_report(result: dict) -> list[dict]:
    """The benchmark's targets against what was measured: the fast wing's :data:`TARGETS`
    (:data:`TARGETS_CUDA` on a GPU), peak RSS <= DeepCTR's and |AUC difference| <= 0.01 for every
    configuration; the taught path's :data:`TARGETS_TAUGHT`; and OMoE's training time within
    :data:`OMOE_WITHIN` of MMoE's on the taught path. Only configurations that ran both sides count."""
    on_gpu = result["meta"]["spec"]["device"] == "cuda"
    out = _ratio_targets(result, "fast", TARGETS_CUDA if on_gpu else TARGETS)
    pairs = [(bs, dim, runs[("fast", "mmoe")], runs[("deepctr", "mmoe")]) for bs, dim, runs in _by_config(result)
             if ("fast", "mmoe") in runs and ("deepctr", "mmoe") in runs]
    for bs, dim, ours, theirs in pairs:
        out.append({"impl": "fast", "what": "peak_rss", "batch_size": bs, "emb_dim": dim, "required": "<= DeepCTR's",
                    "ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
                    "met": ours["peak_rss_mb"] <= theirs["peak_rss_mb"]})
    for bs, dim, ours, theirs in pairs:
        diff = ours["auc"] - theirs["auc"]
        out.append({"impl": "fast", "what": "auc", "batch_size": bs, "emb_dim": dim, "required": "|diff| <= 0.01",
                    "ratio": diff, "met": abs(diff) <= 0.01})
    out += _ratio_targets(result, "taught", TARGETS_TAUGHT)
    for bs, dim, runs in _by_config(result):
        mmoe, omoe = runs.get(("taught", "mmoe")), runs.get(("taught", "omoe"))
        if mmoe is not None and omoe is not None:
            ratio = mmoe["train_samples_per_s"] / omoe["train_samples_per_s"]  # OMoE's time / MMoE's
            out.append({"impl": "taught", "what": "omoe_time", "batch_size": bs, "emb_dim": dim,
                        "required": f"<= {OMOE_WITHIN}x MMoE's", "ratio": ratio, "met": ratio <= OMOE_WITHIN})
    return out


def _tables_line(data: dict) -> str:
    rows = sum(data["vocab_sizes"])
    fitted = sum(data.get("fitted_vocab_sizes", data["vocab_sizes"]))
    how = data.get("tables", "fitted")
    if how == "catalog":
        return f"sized for the catalog ({rows:,} rows in all; the training rows show ids for {fitted:,} of them)"
    return f"sized to the ids the training rows show ({rows:,} rows in all)"


def _num(record: dict | None, key: str, fmt: str, width: int) -> str:
    value = None if record is None else record.get(key)
    return (format(value, fmt) if value is not None else "-").rjust(width)


def _ratio(a: dict | None, b: dict | None, key: str) -> str:
    return f"{a[key] / b[key]:6.2f}x" if a and b else f"{'-':>7}"


def format_table(result: dict, targets: bool = True) -> str:
    """The printed tables: MMoE's samples/s, ratios against DeepCTR-Torch, peak RSS and AUC for the
    taught path, the fast wing and DeepCTR-Torch; then the taught path by model; then (unless
    ``targets=False``) the benchmark's targets, each met or not."""
    return "\n".join([*_header(result["meta"]), *_comparison(result), *_by_model(result),
                      *_footer(result, targets)])


def shown_command(command: str) -> str:
    """A shipped run's recorded command with each output path (``--json``, ``--out``) cut to its
    file name: the folder belonged to the machine that ran it."""
    words = shlex.split(command)
    for i, word in enumerate(words[:-1]):
        if word in ("--json", "--out"):
            words[i + 1] = PurePath(words[i + 1]).name
    return shlex.join(words)


def _header(m: dict) -> list[str]:
    setups = [("taught", m.get("taught_setup")), ("fast", m.get("fast_setup", m.get("ours_setup"))),
              ("DeepCTR", m.get("deepctr_setup"))]
    return [
        f"MMoE, one epoch on {m['data']['train_rows']:,} rows, prediction of {m['data']['rows']:,} rows; "
        f"{m['spec']['threads']} threads on {m['spec']['device']}; median of {m['spec']['repeats']} runs "
        "(one process each, the implementations interleaved)",
        f"embedding tables: {_tables_line(m['data'])}",
        f"machine: {m['machine']['cpu']}{'; GPU ' + m['machine']['gpu'] if 'gpu' in m['machine'] else ''}; "
        f"torch {m['machine']['torch']}, DeepCTR-Torch {m['machine']['deepctr_torch']}; "
        f"{m['date_utc']}; load average before {m['load_average_before'][0]:.2f}",
        *[f"{name + ':':8s} {setup}" for name, setup in setups if setup],
        "",
    ]


def _comparison(result: dict) -> list[str]:
    """MMoE by implementation, one row per batch size and embedding dim."""
    lines = [
        f"{'batch':>5} {'dim':>3} | {'train samples/s (ratio to DeepCTR)':^45} | "
        f"{'predict samples/s (ratio to DeepCTR)':^47} | {'peak RSS MiB':^20} | {'test AUC (mean of tasks)':^23}",
        f"{'':>5} {'':>3} | {'taught':>7} {'fast':>7} {'DeepCTR':>7} {'taught':>10} {'fast':>10} |"
        f" {'taught':>8} {'fast':>8} {'DeepCTR':>8} {'taught':>10} {'fast':>9} |"
        f" {'taught':>6} {'fast':>6} {'DCTR':>6} | {'taught':>7} {'fast':>7} {'DCTR':>7}",
    ]
    tr, pr = "train_samples_per_s", "predict_samples_per_s"
    for bs, dim, runs in _by_config(result):
        t, f, d = runs.get(("taught", "mmoe")), runs.get(("fast", "mmoe")), runs.get(("deepctr", "mmoe"))
        lines.append(
            f"{bs:>5} {dim:>3} | {_num(t, tr, ',.0f', 7)} {_num(f, tr, ',.0f', 7)} {_num(d, tr, ',.0f', 7)}"
            f" {_ratio(t, d, tr):>10} {_ratio(f, d, tr):>10} |"
            f" {_num(t, pr, ',.0f', 8)} {_num(f, pr, ',.0f', 8)} {_num(d, pr, ',.0f', 8)}"
            f" {_ratio(t, d, pr):>10} {_ratio(f, d, pr):>9} |"
            f" {_num(t, 'peak_rss_mb', '.0f', 6)} {_num(f, 'peak_rss_mb', '.0f', 6)}"
            f" {_num(d, 'peak_rss_mb', '.0f', 6)} |"
            f" {_num(t, 'auc', '.4f', 7)} {_num(f, 'auc', '.4f', 7)} {_num(d, 'auc', '.4f', 7)}")
    return lines


def _by_model(result: dict) -> list[str]:
    """The taught path's OMoE and Shared-Bottom beside its MMoE, where they ran."""
    configs = [(bs, dim, runs) for bs, dim, runs in _by_config(result)
               if any(impl == "taught" and model != "mmoe" for impl, model in runs)]
    if not configs:
        return []
    lines = ["", "the taught path by model: train samples/s (time relative to MMoE's)",
             f"{'batch':>5} {'dim':>3} | {'MMoE':>8} | {'OMoE':>8} {'':>7} | {'Shared-Bottom':>13} {'':>7}"]
    for bs, dim, runs in configs:
        base = runs.get(("taught", "mmoe"))
        cells = []
        for model, width in (("omoe", 8), ("shared_bottom", 13)):
            r = runs.get(("taught", model))
            rel = (f"{base['train_samples_per_s'] / r['train_samples_per_s']:6.2f}x" if r and base else f"{'-':>7}")
            cells.append(f"{_num(r, 'train_samples_per_s', ',.0f', width)} {rel}")
        lines.append(f"{bs:>5} {dim:>3} | {_num(base, 'train_samples_per_s', ',.0f', 8)} | {cells[0]} | {cells[1]}")
    return lines


def _footer(result: dict, targets: bool = True) -> list[str]:
    """The machine's matrix-multiply limit, GPU memory, the targets and a note on a busy machine."""
    m = result["meta"]
    where = "float32 on the GPU" if m["spec"]["device"] == "cuda" else f"{m['spec']['threads']} threads"
    lines = ["", f"matrix-multiply limit of this machine (torch.mm 2048x2048, {where}): "
                 f"{m['matmul_gflops']:.0f} GFLOP/s"]
    if m["spec"]["device"] == "cuda":
        peaks = "; ".join(f"batch {bs} dim {dim}: fast {runs[('fast', 'mmoe')]['peak_gpu_mb']:.0f}, "
                          f"DeepCTR {runs[('deepctr', 'mmoe')]['peak_gpu_mb']:.0f}"
                          for bs, dim, runs in _by_config(result)
                          if all("peak_gpu_mb" in runs.get((i, "mmoe"), {}) for i in ("fast", "deepctr")))
        if peaks:
            lines.append(f"peak GPU memory allocated by torch, MiB: {peaks}")
    if targets and result.get("targets"):
        lines.append("targets:")
        lines += [_target_line(t) for t in result["targets"]]
    load = m["load_average_before"][0]
    if m["spec"]["device"] == "cpu" and load > 0.5 * m["spec"]["threads"]:
        lines.append(f"note: load average was {load:.2f} before the run, so other work shared the CPU; "
                     "absolute figures are low and noisy, ratios (measured side by side) less so")
    return lines


def _target_line(t: dict) -> str:
    shown = (f"{t['ratio']:.2f}x (need >= {t['required']}x)" if t["what"] in ("train", "predict")
             else f"{t['ratio']:+.4f} (need {t['required']})" if t["what"] == "auc"
             else f"{t['ratio']:.2f}x (need {t['required']})" if t["what"] == "omoe_time"
             else f"fast/DeepCTR {t['ratio']:.2f} (need {t['required']})")
    return (f"  {'met    ' if t['met'] else 'NOT MET'} {t.get('impl', 'fast'):6s} {t['what']:9s} "
            f"batch {t['batch_size']:5d} dim {t['emb_dim']:3d}: {shown}")
