"""Training on several processes (mmoe_annotated.scale.distributed) against one process.

Runs the real command, ``python -m torch.distributed.run --nproc_per_node 2 -m mmoe_annotated.scale.distributed``,
on localhost with gloo, and rebuilds the same training in this process: each step, each process's
batch (its share of the rows, the last batch partial, padding once its rows end), the same seed, the
same encoder. What the two processes compute is stated exactly: the average of their weighted
gradients (:func:`~mmoe_annotated.scale.ddp.train_step`), which in exact arithmetic is the gradient
of the global batch. The command is compared with that averaging done in this process (the same
float32 operations); that the averaging *is* the global batch's gradient is checked in float64,
where rounding cannot hide a wrong weighting or pass for one (in float32 the two orders of summing
drift apart over hundreds of steps, by as much as 5e-2 on some data).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import mmoe_annotated as mm
from mmoe_annotated.scale import distributed as D
from mmoe_annotated.train.optimizers import make_optimizer
from mmoe_annotated.scale import ddp
from mmoe_annotated.scale import stream as S

REPO = Path(__file__).resolve().parents[2]
ROWS, BATCH, EPOCHS, SEED = 6000, 32, 2, 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data: Path, out: Path, nproc: int = 2, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "mmoe_annotated.scale.distributed", "--data", str(data), "--out", str(out),
               "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--seed", str(SEED), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return mm.write_byterec(mm.make_byterec(ROWS, seed=11), tmp_path_factory.mktemp("ddp") / "byterec.txt")


@pytest.fixture(scope="module")
def two_process_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_out")
    done = _torchrun(data, out, 2, "--save-predictions")
    assert done.returncode == 0, done.stderr[-4000:]
    return out, json.loads((out / "metrics.json").read_text())


def _share_batches(data: Path, world_size: int = 2, local: int = BATCH // 2, missing_labels: bool = False):
    """Index, train parts, encoder, steps and each process's stream, as the command makes them."""
    index = S.index_byterec(data, D.chunk_bytes_for(data, world_size), missing_labels=missing_labels)
    train, _ = index.split(0.8)
    template = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES)
    encoder = S.fit_encoder(index, train, template)
    steps = D._steps(D.shard_rows(train, world_size), local)
    streams = [S.ByteRecStream(index, D.shard(train, r, world_size), encoder, batch_size=local, seed=SEED + r,
                               batches=steps) for r in range(world_size)]
    return index, train, encoder, steps, streams


def _epoch_batches(streams, steps: int, epoch: int):
    """Each step's batches, one per process; a process whose rows ended pads (one row, labels NaN)."""
    for st in streams:
        st.set_epoch(epoch)
    per_process = [list(st) for st in streams]
    for batches in per_process:
        batches += [ddp._padding(batches[0])] * (steps - len(batches))
    return list(zip(*per_process))


def _averaged_step(model, optimizer, batches, task_types) -> None:
    """What DDP computes, in one process: each process's loss weighted as train_step weighs it,
    its gradient divided by the number of processes, the gradients summed, one step."""
    world = len(batches)
    # (T,), in the labels' dtype, as train_step counts: 2 / 27 in float32 would round the weights
    counts = sum((~torch.isnan(y)).sum(0) for _, _, y in batches).to(batches[0][2].dtype)
    grads = None
    for ids, dense, y in batches:
        model.zero_grad(set_to_none=True)
        sums = mm.task_losses(model(ids, dense).logits, y.to(counts.dtype), task_types, reduction="sum")
        (sums * (world / counts.clamp_min(1))).sum().backward()
        g = [p.grad / world for p in model.parameters()]
        grads = g if grads is None else [a + b for a, b in zip(grads, g)]
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    optimizer.step()


def _one_process_reference(data: Path, world_size: int = 2, glued: bool = False, dtype=torch.float32,
                           missing_labels: bool = False):
    """The command's training in one process: each step, the processes' batches averaged as DDP
    averages them; with ``glued``, instead one step on the processes' batches side by side (the
    global batch, plain per-task means)."""
    torch.set_num_threads(1)
    _, train, encoder, steps, streams = _share_batches(data, world_size, missing_labels=missing_labels)
    model = mm.build_model("mmoe", mm.ModelConfig(encoder.features, seed=SEED)).to(dtype)
    optimizer = make_optimizer("adagrad", model.parameters())
    cast = lambda b: tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in b)
    used = 0
    for epoch in range(EPOCHS):
        for batches in _epoch_batches(streams, steps, epoch):
            batches = [cast(b) for b in batches]
            used += sum(int((~torch.isnan(y)).any(1).sum()) for _, _, y in batches)  # padding: no label
            if glued:
                D.train_step(model, optimizer, tuple(torch.cat(parts) for parts in zip(*batches)),
                             model.config.task_types)
            else:
                _averaged_step(model, optimizer, batches, model.config.task_types)
    assert used == EPOCHS * sum(hi - lo for _, lo, hi in train), "every training row, every epoch"
    return model, encoder, steps


def test_two_processes_train_the_weights_of_one(data, two_process_run):
    """The command's weights are those of the same gradient averaging done in one process."""
    out, metrics = two_process_run
    model, encoder, steps = _one_process_reference(data)
    assert metrics["world_size"] == 2 and metrics["steps_per_epoch"] == steps
    assert steps * EPOCHS >= 250, "a few hundred steps"
    ckpt = mm.load_checkpoint(out / "model.ckpt")
    assert ckpt.encoder.to_dict() == encoder.to_dict()  # merged per-process counts = a one-process fit
    ours, theirs = model.state_dict(), ckpt.model.state_dict()
    assert ours.keys() == theirs.keys()
    worst = max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
    assert worst < 1e-6, f"largest weight difference {worst:.2e}"
    start = mm.build_model("mmoe", mm.ModelConfig(encoder.features, seed=SEED)).state_dict()
    assert max(float((start[k] - theirs[k]).abs().max()) for k in start) > 1e-3  # it did train


def test_the_averaged_gradient_is_the_global_batchs_in_float64(data):
    """Two processes' weighted, averaged gradients step as one process on the global batch: checked
    in float64 over the same steps as the command (the last batches partial, one process padding)."""
    averaged, _, steps = _one_process_reference(data, dtype=torch.float64)
    glued, _, _ = _one_process_reference(data, glued=True, dtype=torch.float64)
    a, b = averaged.state_dict(), glued.state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-9, f"largest weight difference {worst:.2e} after {steps * EPOCHS} steps"


@pytest.fixture(scope="module")
def missing_data(tmp_path_factory) -> Path:
    """A tiny file with about 20 % of each task's label fields empty (every row keeps one label)."""
    from .test_stream_missing_labels import write_with_missing_labels

    return write_with_missing_labels(mm.make_byterec(1500, seed=17), tmp_path_factory.mktemp("ddp_ml") / "b.txt",
                                     seed=2, both=False)


def test_two_processes_with_missing_labels_train_the_weights_of_one(missing_data, tmp_path):
    """``--missing-labels``: empty label fields are NaN, masked by the loss; the two processes'
    weights are those of the same averaging in one process, and the gathered metrics score each
    task on its labelled test rows, as ``evaluate`` does in one process. Without the option the
    command refuses the file with the loader's message."""
    done = _torchrun(missing_data, tmp_path / "run", 2, "--missing-labels", "--save-predictions")
    assert done.returncode == 0, done.stderr[-4000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    model, encoder, steps = _one_process_reference(missing_data, missing_labels=True)
    assert metrics["missing_labels"] is True and metrics["steps_per_epoch"] == steps
    ckpt = mm.load_checkpoint(tmp_path / "run" / "model.ckpt")
    assert ckpt.encoder.to_dict() == encoder.to_dict()
    ours, theirs = model.state_dict(), ckpt.model.state_dict()
    worst = max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
    print(f"two processes with missing labels vs one: largest weight difference {worst:.2e}")
    assert worst < 1e-6, f"largest weight difference {worst:.2e}"
    start = mm.build_model("mmoe", mm.ModelConfig(encoder.features, seed=SEED)).state_dict()
    assert max(float((start[k] - theirs[k]).abs().max()) for k in start) > 1e-3  # it did train
    _, test = mm.split_by_row(mm.load_byterec(missing_data, missing_labels=True), 0.8)
    saved = np.load(tmp_path / "run" / "predictions.npz")
    np.testing.assert_array_equal(saved["labels"], test[list(mm.TASKS)].to_numpy(np.float32))
    one = mm.evaluate(ckpt.model, test, encoder=ckpt.encoder)
    for task in mm.TASKS:
        labelled = int(test[task].notna().sum())
        assert 0 < labelled < len(test)
        assert metrics["tasks"][task]["labelled"] == one[task]["labelled"] == labelled
        assert metrics["tasks"][task]["auc"] == pytest.approx(one[task]["auc"], abs=1e-9)
        assert f"labelled {labelled}" in done.stdout
    refused = _torchrun(missing_data, tmp_path / "strict", 2)
    assert refused.returncode != 0
    with pytest.raises(mm.DataError, match="missing label"):
        mm.load_byterec(missing_data)
    assert re.search(rf"failed: DataError: {re.escape(str(missing_data))}, line \d+, column '(finish|like)': "
                     "missing label", refused.stderr), refused.stderr[-3000:]
    assert not (tmp_path / "strict" / "metrics.json").exists()


def test_the_averaged_gradient_with_missing_labels_is_the_global_batchs_in_float64(missing_data):
    """With missing labels each task's mean runs over its labelled rows of the global batch: the
    weighted, averaged gradients of two processes still step as one process on the global batch."""
    averaged, _, steps = _one_process_reference(missing_data, dtype=torch.float64, missing_labels=True)
    glued, _, _ = _one_process_reference(missing_data, glued=True, dtype=torch.float64, missing_labels=True)
    a, b = averaged.state_dict(), glued.state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-9, f"largest weight difference {worst:.2e} after {steps * EPOCHS} steps"


def test_every_training_row_trains_every_epoch(data, two_process_run):
    """Shares differ by at most one row; the steps are the largest share's (its last batch partial),
    so no row is dropped, however unevenly the rows divide."""
    _, metrics = two_process_run
    rows = int(ROWS * 0.8)
    assert metrics["train_rows_used_per_epoch"] == rows
    assert metrics["train_rows"] == rows
    index, train, _, steps, streams = _share_batches(data)
    shares = [st.rows for st in streams]
    assert sum(shares) == rows and max(shares) - min(shares) <= 1
    assert metrics["train_rows_per_process"] == shares and metrics["steps_per_epoch"] == steps
    made = [len(list(st)) for st in streams]
    assert max(made) == steps and steps * (BATCH // 2) >= max(shares) > (steps - 1) * (BATCH // 2)


def _run_one_epoch(path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return _torchrun(path, out, 2, *extra)


def test_a_small_file_gives_every_process_rows(tmp_path):
    """A file of one chunk: each process gets half its rows (cut inside the chunk), not rank 0 all of them."""
    path = mm.write_byterec(mm.make_byterec(60, seed=13), tmp_path / "small.txt")
    assert len(S.index_byterec(path, D.chunk_bytes_for(path, 2)).chunks) == 1
    done = _run_one_epoch(path, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_rows_per_process"] == [24, 24] and metrics["train_rows_used_per_epoch"] == 48


def test_too_few_rows_for_the_processes_says_so(tmp_path):
    path = mm.write_byterec(mm.make_byterec(3, seed=14), tmp_path / "tiny.txt")
    index = S.index_byterec(path)
    train, _ = index.split(0.5)
    assert sum(hi - lo for _, lo, hi in train) == 1
    encoder = S.fit_encoder(index, train, mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES))
    args = D.parse_args(["--data", str(path), "--out", str(tmp_path / "o"), "--batch-size", "3"])
    cfg, local = D._train_config(args, D.Setup(0, 3))
    with pytest.raises(ValueError, match="1 training row.* cannot give each of the 3 processes a row"):
        D._train_stream(index, train, encoder, cfg, local, 100, D.Setup(0, 3))


def test_an_undefined_auc_is_reported_as_undefined_and_the_job_succeeds(tmp_path):
    """A test split holding one class of a task: AUC is undefined; the job writes null, names it, exits 0."""
    df = mm.make_byterec(400, seed=15)
    df.loc[320:, "like"] = 0  # the test split (the last 20 %) holds no like
    path = mm.write_byterec(df, tmp_path / "one_class.txt")
    done = _run_one_epoch(path, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tasks"]["like"]["auc"] is None and metrics["undefined"] == ["like auc"]
    assert metrics["tasks"]["finish"]["auc"] > 0
    assert "like AUC undefined" in done.stdout and "undefined: like auc" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_run_refused_at_its_first_check_leaves_no_earlier_output(tmp_path):
    """Every file the command writes goes before its first check: a run refused there, or a later
    run without --save-predictions, never leaves an earlier run's file beside its own."""
    path = mm.write_byterec(mm.make_byterec(400, seed=16), tmp_path / "byterec.txt")
    out = tmp_path / "run"
    out.mkdir()
    for name in ("predictions.npz", "model.ckpt", "metrics.json"):
        (out / name).write_bytes(b"an earlier run")
    done = _torchrun(path, out, 2, "--batch-size", "33")  # 33 rows do not divide between 2 processes
    assert done.returncode != 0 and "must divide evenly" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == []
    (out / "predictions.npz").write_bytes(b"an earlier run")
    done = _torchrun(path, out, 2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.ckpt"]
def test_gathered_metrics_are_one_process_metrics(data, two_process_run):
    out, metrics = two_process_run
    saved = np.load(out / "predictions.npz")
    _, test = mm.split_by_row(mm.load_byterec(data), 0.8)
    assert len(saved["labels"]) == len(test) == metrics["test_rows"]
    assert (saved["labels"] == test[list(mm.TASKS)].to_numpy()).all()  # every test row, in file order
    ckpt = mm.load_checkpoint(out / "model.ckpt")
    one = mm.evaluate(ckpt.model, test, encoder=ckpt.encoder)
    for t, task in enumerate(mm.TASKS):
        p = torch.sigmoid(torch.from_numpy(saved["logits"][:, t]).double()).numpy()
        assert metrics["tasks"][task]["auc"] == roc_auc_score(saved["labels"][:, t], p)
        assert metrics["tasks"][task]["auc"] == pytest.approx(one[task]["auc"], abs=1e-9)
        assert metrics["tasks"][task]["logloss"] == pytest.approx(one[task]["logloss"], abs=1e-6)
    # what averaging per process would have reported instead: not the same number
    half = len(test) // 2
    p = saved["logits"][:, 1]
    per_rank = np.mean([roc_auc_score(saved["labels"][:half, 1], p[:half]),
                        roc_auc_score(saved["labels"][half:, 1], p[half:])])
    assert per_rank != metrics["tasks"]["like"]["auc"]
    assert metrics["samples_per_second"] > 0 and len(metrics["peak_rss_mib_per_process"]) == 2


def test_a_failing_rank_stops_the_job_without_a_checkpoint(tmp_path):
    path = mm.write_byterec(mm.make_byterec(3000, seed=12), tmp_path / "byterec.txt")
    index = S.index_byterec(path, D.chunk_bytes_for(path, 2))
    second, lo, _ = D.shard(index.split(0.8)[0], 1, 2)[1]  # a training chunk that rank 1 alone reads
    assert lo == 0
    lines = path.read_text().split("\n")
    bad = second.first_line + 2
    fields = lines[bad - 1].split("\t")
    fields[mm.COLUMNS.index("finish")] = "7"  # same length: the chunks do not move
    lines[bad - 1] = "\t".join(fields)
    path.write_text("\n".join(lines))
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.ckpt").write_bytes(b"an old run")  # must not pass for this run's result
    done = _torchrun(path, out, 2)
    assert done.returncode != 0
    assert f"[rank 1 of 2] failed: DataError: {path}, line {bad}, column 'finish': label '7' is not 0 or 1" \
        in done.stderr, done.stderr[-3000:]
    assert not (out / "model.ckpt").exists() and not (out / "metrics.json").exists()



def test_the_command_module_lists_the_pieces_it_runs():
    """The pieces live in scale/ddp.py; the command's module lists them, where the appendix
    (``distributed.train_step``) and the tests above find them."""
    from mmoe_annotated.scale import ddp

    for name in ("Setup", "setup", "chunk_bytes_for", "train_step", "train_epochs", "predict_parts"):
        assert getattr(D, name) is getattr(ddp, name)
