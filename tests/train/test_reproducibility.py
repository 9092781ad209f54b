"""Reproducibility on CPU: the same seeds give bit-identical weights and predictions in two fresh
Python processes (with different hash seeds); a different seed gives different ones.

The knobs for CUDA determinism are listed in :func:`mmoe_annotated.seed_everything`; this machine
has no GPU, so only CPU is checked here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Trains a small model from scratch and prints digests of its weights and predictions.
SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np, torch
    import mmoe_annotated as mm

    def run(seed):
        mm.seed_everything(seed)
        df = mm.load_example(n_rows=1200, seed=0)
        train, test = mm.split_by_row(df)
        # One hashed column: its buckets must not depend on Python's per-process hash seed.
        enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, hash_buckets={"device": 97}).fit(train)
        cfg = mm.ModelConfig(enc.features, expert_hidden=(16, 8), gate_hidden=(8,), tower_hidden=(8,),
                             dropout=0.1, seed=seed)
        model = mm.MMoE(cfg)
        mm.fit(model, train, mm.TrainConfig(epochs=2, batch_size=64, seed=seed, progress=False), encoder=enc)
        preds = mm.predict(model, test, encoder=enc)
        h = hashlib.sha256()
        for name, t in model.state_dict().items():
            h.update(name.encode()); h.update(t.detach().contiguous().numpy().tobytes())
        return {"weights": h.hexdigest(),
                "predictions": hashlib.sha256(np.ascontiguousarray(preds).tobytes()).hexdigest(),
                "mean_prediction": [round(float(v), 6) for v in preds.mean(0)]}

    # Seed 7, then 8, then 7 again in the same process: the global RNG state left by one run
    # must not leak into the next.
    print(json.dumps([run(7), run(8), run(7)]))
""")


def _start(hash_seed: str) -> subprocess.Popen:
    # One thread each: the two processes run side by side on 2 cores without oversubscription.
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _result(proc: subprocess.Popen) -> list[dict]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs():
    """Two fresh processes, started at once, with different Python hash seeds."""
    first, second = _start("0"), _start("12345")
    return _result(first), _result(second)


def test_same_seed_same_weights_in_fresh_processes(runs):
    a, b = runs
    assert a[0]["weights"] == b[0]["weights"]
    assert a[1]["weights"] == b[1]["weights"]


def test_same_seed_same_predictions_in_fresh_processes(runs):
    a, b = runs
    assert a[0]["predictions"] == b[0]["predictions"]
    assert a[0]["mean_prediction"] == b[0]["mean_prediction"]
    assert a[1]["predictions"] == b[1]["predictions"]


def test_same_seed_twice_in_one_process(runs):
    a, _ = runs
    assert a[2] == a[0]


def test_other_seed_differs(runs):
    """The checks above could not pass by accident: another seed changes both digests."""
    a, _ = runs
    assert a[0]["weights"] != a[1]["weights"]
    assert a[0]["predictions"] != a[1]["predictions"]
