"""Training on several processes (mmoe_annotated.scale.distributed) against one process.

Runs the real command, ``python -m torch.distributed.run --nproc_per_node 2 -m mmoe_annotated.scale.distributed``,
on localhost with gloo, and rebuilds the same training in this process: the same global batches (rank 0's
rows then rank 1's), the same seed, the same encoder. DistributedDataParallel averages the two processes'
gradients, which is the gradient of the global batch, so the weights must agree.
"""
from __future__ import annotations

import json
import os
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


def _one_process_reference(data: Path, world_size: int = 2):
    """The same training in one process: global batch = the processes' batches side by side."""
    torch.set_num_threads(1)
    index = S.index_byterec(data, D.chunk_bytes_for(data, world_size))
    train, _ = index.split(0.8)
    template = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES)
    encoder = S.fit_encoder(index, train, template)
    model = mm.build_model("mmoe", mm.ModelConfig(encoder.features, seed=SEED))
    optimizer = make_optimizer("adagrad", model.parameters())
    local = BATCH // world_size
    steps = S.ByteRecStream.steps_for(train, world_size, local)
    streams = [S.ByteRecStream(index, train, encoder, batch_size=local, seed=SEED, rank=r, world_size=world_size,
                               batches=steps, drop_last=True) for r in range(world_size)]
    for epoch in range(EPOCHS):
        for st in streams:
            st.set_epoch(epoch)
        for batches in zip(*streams):
            glued = tuple(torch.cat(parts) for parts in zip(*batches))  # (BATCH, ...)
            D.train_step(model, optimizer, glued, model.config.task_types)
    return model, encoder, steps


def test_two_processes_train_the_weights_of_one(data, two_process_run):
    out, metrics = two_process_run
    model, encoder, steps = _one_process_reference(data)
    assert metrics["world_size"] == 2 and metrics["steps_per_epoch"] == steps
    assert steps * EPOCHS >= 250, "a few hundred steps"
    ckpt = mm.load_checkpoint(out / "model.ckpt")
    assert ckpt.encoder.to_dict() == encoder.to_dict()  # merged per-process counts = a one-process fit
    ours, theirs = model.state_dict(), ckpt.model.state_dict()
    assert ours.keys() == theirs.keys()
    worst = max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
    assert worst < 1e-5, f"largest weight difference {worst:.2e}"
    start = mm.build_model("mmoe", mm.ModelConfig(encoder.features, seed=SEED)).state_dict()
    assert max(float((start[k] - theirs[k]).abs().max()) for k in start) > 1e-3  # it did train


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
    second = index.chunks[1]  # the training chunk that rank 1 reads
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
