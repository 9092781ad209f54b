"""The synthetic experiment runner: batched runs equal plain runs, determinism, the command line."""
import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated import synthetic
from mmoe_annotated.experiments import (RESULT_COLUMNS, StackedRuns, SyntheticExperiment, num_parameters,
                                        paper_model_config, report, run_synthetic)
from mmoe_annotated.experiments.cli import main
from mmoe_annotated.experiments.runner import _Stream

TINY = dict(correlations=(0.5, 1.0), seeds=2, steps=4, eval_every=2, eval_samples=64, batch_size=32)


def test_paper_shapes_and_parameter_counts():
    mmoe = mm.build_model("mmoe", paper_model_config("mmoe"))
    assert mmoe.num_experts == 8 and mmoe.config.expert_hidden == (16,) and mmoe.config.gate_hidden == ()
    assert mmoe.config.tower_hidden == (8,)
    # By hand: experts 8 x (100*16 + 16); towers 2 x (16*8 + 8) + 2 x 8 outputs + 2 biases;
    # gates (bias-free) 100*8 per gate; Shared-Bottom's bottom 100*113 + 113 and towers on 113.
    towers = lambda d: 2 * (d * 8 + 8) + 2 * 8 + 2  # noqa: E731
    expected = {"mmoe": 8 * 1616 + 2 * 800 + towers(16), "omoe": 8 * 1616 + 800 + towers(16),
                "shared_bottom": 100 * 113 + 113 + towers(113)}
    assert num_parameters() == expected
    # "Comparable", as section 5.1 says: within 12 % of each other.
    counts = list(expected.values())
    assert max(counts) / min(counts) < 1.12


@pytest.mark.parametrize("kind", ["mmoe", "omoe", "shared_bottom"])
def test_batched_runs_equal_plain_runs(kind):
    torch.manual_seed(0)
    models = [mm.build_model(kind, paper_model_config(kind, seed=s)) for s in (3, 4)]
    plain = copy.deepcopy(models[1])
    stacked = StackedRuns(models, lr=1e-2)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    for _ in range(3):
        X, Y = torch.randn(2, 16, 100), torch.randn(2, 16, 2)
        losses = stacked.step(X, Y)
        out = plain(None, X[1]).logits
        loss = ((out - Y[1]) ** 2).mean(0).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert losses[1].item() == pytest.approx(loss.item(), rel=1e-5)
    back = stacked.unstack(1, plain)
    # Batched kernels sum in another order (gradients agree to ~1e-8), and Adam divides by
    # sqrt(v): an element whose gradient is ~1e-7 can move ~1e-6 differently. One Adam step
    # moves an element by up to lr = 1e-2, so 1e-5 still tells a wrong update from rounding.
    for (name, a), b in zip(back.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    # The originals are not trained in place.
    assert not torch.equal(models[1].experts.weights[0], plain.experts.weights[0])


def test_stacked_runs_rejects_mixed_models():
    a = mm.build_model("mmoe", paper_model_config("mmoe"))
    b = mm.build_model("omoe", paper_model_config("omoe"))
    with pytest.raises(ValueError, match="share one class"):
        StackedRuns([a, b], lr=1e-3)
    with pytest.raises(ValueError, match=r"\(1, B, I\)"):
        StackedRuns([a], lr=1e-3)(torch.randn(16, 100))


def test_stream_labels_follow_the_generator():
    exp = SyntheticExperiment(**TINY)
    stream = _Stream(exp, torch.device("cpu"))
    X, Y = stream.batch()
    assert X.shape == (4, 32, 100) and Y.shape == (4, 32, 2)
    # Runs are correlation-major; a seed's rows are shared by its runs at every correlation.
    torch.testing.assert_close(X[0], X[2])
    W = synthetic.task_weights(1.0, seed=1)
    clean = synthetic.signal(X[3].double().numpy() @ W)
    noise = Y[3].double().numpy() - clean
    assert np.abs(noise).max() < 6 * synthetic.PAPER_LIKE.noise_std  # only the noise is left
    assert 0.05 < noise.std() < 0.2


def test_run_synthetic_rows_and_determinism():
    exp = SyntheticExperiment(**TINY, lrs={"mmoe": (1e-2, 1e-3), "omoe": (1e-2,), "shared_bottom": (1e-2,)})
    df = run_synthetic(exp, progress=False)
    assert list(df.columns) == RESULT_COLUMNS
    assert len(df) == 4 * 2 * 2 * 2  # (model, lr) groups x correlations x seeds x evaluations
    assert sorted(df["step"].unique()) == [2, 4]
    assert np.isfinite(df[["loss", "loss_task2", "train_loss"]].to_numpy()).all()
    again = run_synthetic(exp, progress=False)
    pd.testing.assert_frame_equal(df, again)
    # A seed's numbers do not depend on the other seeds in the grid.
    alone = run_synthetic(SyntheticExperiment(**{**TINY, "seeds": 1, "first_seed": 1},
                                              lrs=exp.lrs), progress=False)
    both = df[df["seed"] == 1].reset_index(drop=True)
    np.testing.assert_allclose(alone["loss"], both["loss"], rtol=1e-4)
    # It does depend on how many correlations share the seed's stream (one noise draw each):
    # the runner's docstring says so, and this keeps the statement true.
    fewer = run_synthetic(SyntheticExperiment(**{**TINY, "correlations": (0.5,)}, lrs=exp.lrs), progress=False)
    assert not np.allclose(fewer["loss"], df[df["correlation"] == 0.5]["loss"].to_numpy())
    # Nor on the other (model, lr) groups: a sweep split into one command per lr gives the same rows.
    part = run_synthetic(SyntheticExperiment(**TINY, models=("mmoe",), lrs={"mmoe": (1e-3,)}), progress=False)
    whole = df[(df["model"] == "mmoe") & (df["lr"] == 1e-3)].reset_index(drop=True)
    pd.testing.assert_frame_equal(part, whole)


@pytest.mark.parametrize("kwargs, match", [
    (dict(models=("mmoe", "ple")), "unknown model"), (dict(correlations=(1.5,)), "correlations"),
    (dict(lrs={"mmoe": ()}), "lrs"), (dict(steps=0), "steps"), (dict(seeds=0), "seeds"),
])
def test_experiment_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticExperiment(**kwargs)


def test_summaries():
    rows = [("mmoe", 0.5, s, 1e-2, 10, loss, 0.0, 0.0) for s, loss in enumerate([0.1, 0.2, 3.0])]
    rows += [("omoe", 0.5, s, 1e-2, 10, loss, 0.0, 0.0) for s, loss in enumerate([0.3, 0.1, 0.4])]
    rows += [("mmoe", 0.5, 0, 1e-2, 5, 9.0, 0.0, 0.0)]  # an earlier step: not final
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    s = report.summarize(df).set_index("model")
    assert s.loc["mmoe", "runs"] == 3
    assert s.loc["mmoe", "mean"] == pytest.approx(1.1)
    assert s.loc["mmoe", "median"] == pytest.approx(0.2)
    assert s.loc["mmoe", "stuck"] == pytest.approx(1 / 3)
    assert s.loc["omoe", "stuck"] == 0
    # The mean's interval is mm.stats' t interval, not a multiple of the standard error.
    _, low, high = mm.stats.mean_interval([0.1, 0.2, 3.0])
    assert (s.loc["mmoe", "mean_low"], s.loc["mmoe", "mean_high"]) == pytest.approx((low, high))
    diff = report.paired(df, ("mmoe", 1e-2), ("omoe", 1e-2), 0.5)
    np.testing.assert_allclose(diff.to_numpy(), [-0.2, 0.1, 2.6])
    a, b = report.aligned(df, ("mmoe", 1e-2), ("omoe", 1e-2), 0.5)
    assert list(a.index) == list(b.index) == [0, 1, 2]
    np.testing.assert_allclose((a - b).to_numpy(), diff.to_numpy())
    with pytest.raises(ValueError, match="no common seeds"):
        report.aligned(df, ("mmoe", 1e-2), ("omoe", 1e-3), 0.5)
    best = report.best_lrs(df, by="median")
    assert set(best["model"]) == {"mmoe", "omoe"}


def test_choose_lrs_takes_one_rate_per_model_over_every_correlation():
    # MMoE: 1e-2 wins at p = 0.5 but loses by more at p = 1, so over both it is 1e-3.
    losses = {("mmoe", 1e-2, 0.5): 0.10, ("mmoe", 1e-2, 1.0): 0.40, ("mmoe", 1e-3, 0.5): 0.20,
              ("mmoe", 1e-3, 1.0): 0.20, ("omoe", 1e-2, 0.5): 0.10, ("omoe", 1e-2, 1.0): 0.10,
              ("omoe", 1e-3, 0.5): 0.30, ("omoe", 1e-3, 1.0): 0.05}
    rows = [(m, p, s, lr, 10, v + 0.01 * s, 0.0, 0.0) for (m, lr, p), v in losses.items() for s in range(3)]
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    assert report.choose_lrs(df) == {"mmoe": 1e-3, "omoe": 1e-2}
    # best_lrs describes per correlation instead: MMoE's winner changes with p.
    best = report.best_lrs(df).set_index(["model", "correlation"])["lr"]
    assert best["mmoe", 0.5] == 1e-2 and best["mmoe", 1.0] == 1e-3
    with pytest.raises(ValueError, match="mean' or 'median"):
        report.choose_lrs(df, by="max")


def test_command_writes_results_and_figures(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["synthetic", "--out", str(out), "--seeds", "2", "--steps", "4", "--eval-every", "2",
               "--eval-samples", "64", "--batch-size", "32", "--correlations", "0.5", "1.0",
               "--lr", "shared_bottom=1e-3,1e-2", "--no-progress"])
    assert rc == 0
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == RESULT_COLUMNS
    assert sorted(df[df["model"] == "shared_bottom"]["lr"].unique()) == [1e-3, 1e-2]
    assert sorted(df[df["model"] == "mmoe"]["lr"].unique()) == [1e-2]
    meta = json.loads((out / "run.json").read_text())
    assert meta["command"].startswith("python -m mmoe_annotated.experiments synthetic --out")
    assert meta["settings"]["seeds"] == 2 and meta["machine"]["torch_threads"] == 1
    for name in ("summary.csv", "figure2_label_correlation.png", "figure4_loss_curves.png",
                 "figure5_final_loss_hist.png"):
        assert (out / name).stat().st_size > 0, name
    assert "results.csv" in capsys.readouterr().out


def test_command_first_seed_numbers_the_seeds(tmp_path, capsys):
    out = tmp_path / "selection"
    argv = ["synthetic", "--out", str(out), "--seeds", "2", "--first-seed", "100", "--steps", "2",
            "--eval-every", "2", "--eval-samples", "32", "--batch-size", "16", "--correlations", "0.5", "1.0",
            "--models", "mmoe", "--no-progress"]
    assert main(argv) == 0
    df = pd.read_csv(out / "results.csv")
    assert sorted(df["seed"].unique()) == [100, 101]
    meta = json.loads((out / "run.json").read_text())
    assert meta["settings"]["first_seed"] == 100 and "--first-seed 100" in meta["command"]
    # The same runs as the library's: seed 100's numbers do not depend on how the seeds are named.
    exp = SyntheticExperiment(models=("mmoe",), correlations=(0.5, 1.0), seeds=1, first_seed=100, steps=2,
                              eval_every=2, eval_samples=32, batch_size=16)
    lib = run_synthetic(exp, progress=False)
    np.testing.assert_allclose(df[df["seed"] == 100]["loss"].to_numpy(), lib["loss"].to_numpy(), rtol=1e-5)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # argparse's usage error, before any work
        main(["-1" if a == "100" else a for a in argv])
    assert e.value.code == 2 and "argument --first-seed: must be at least 0" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["--lr", "ple=1e-3"], "MODEL=LR"), (["--lrs", "-1"], "positive"), (["--correlations", "2"], "correlations"),
])
def test_command_rejects_bad_flags(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) as e:
        main(["synthetic", "--out", str(tmp_path), "--no-progress", *argv])
    # argparse prints its errors to stderr and exits 2; the settings' own checks exit with the message.
    assert match in capsys.readouterr().err + str(e.value.code)


def test_command_names_missing_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SystemExit, match="CUDA is not available"):
        main(["synthetic", "--out", str(tmp_path), "--device", "cuda", "--no-progress", "--steps", "1"])


def test_committed_sweep_loads_from_the_package():
    df, meta = report.load_sweep()
    assert list(df.columns) == RESULT_COLUMNS
    assert meta["command"].startswith("python -m mmoe_annotated.experiments synthetic")
    assert meta["machine"]["cpu_count"] >= 1 and meta["parts"]
    # Chapter 8's claims need at least 20 seeds per model, lr and correlation, and the paper's three lrs.
    assert df.groupby(["model", "lr", "correlation"])["seed"].nunique().min() >= 20
    assert sorted(df["lr"].unique()) == [1e-4, 1e-3, 1e-2]
    with pytest.raises(ValueError, match="no committed run"):
        report.load_sweep("nope")


def test_committed_selection_run_is_the_sweeps_protocol_on_other_seeds():
    """Chapter 8 picks each model's learning rate on this run and reports the sweep: the two must
    share every setting but the seeds, and share no seed."""
    sweep, sweep_meta = report.load_sweep()
    sel, meta = report.load_sweep("synthetic_selection")
    assert list(sel.columns) == RESULT_COLUMNS
    assert not set(sel["seed"]) & set(sweep["seed"])
    settings, reported = meta["settings"], sweep_meta["settings"]
    for key in ("models", "correlations", "steps", "batch_size", "eval_every", "eval_samples", "data"):
        assert settings[key] == reported[key], key
    assert {m: sorted(v) for m, v in settings["lrs"].items()} == {m: sorted(v) for m, v in reported["lrs"].items()}
    assert sorted(sel["seed"].unique()) == list(range(settings["first_seed"],
                                                      settings["first_seed"] + settings["seeds"]))
    assert sel.groupby(["model", "lr", "correlation"])["seed"].nunique().eq(settings["seeds"]).all()
    assert sel["step"].max() == settings["steps"]
    # How it was made, enough to make it again.
    assert meta["command"].startswith("python -m mmoe_annotated.experiments synthetic ")
    assert f"--first-seed {settings['first_seed']}" in meta["command"]
    assert meta["package_version"] and len(meta["git_commit"]) == 40
    assert meta["machine"]["torch"] and meta["machine"]["device"] == "cpu" and meta["machine"]["processor"]
