"""The Census protocol that trains to convergence: early stopping through fit's EarlyStopping, the
columns and learning curves it adds, the search (seeds, mean, edges, grids from the command line,
resuming), the parameter-matched MMoE, balancing settings, provenance, and what merge refuses.

No test touches the network: the files are small samples (tests/experiments/test_census.py)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import mmoe_annotated as mm
from mmoe_annotated.data import census
from mmoe_annotated.experiments import census as study
from mmoe_annotated.experiments import census_search as cs
from mmoe_annotated.experiments.census_protocol import _configs, family_params, matched_hparams
from mmoe_annotated.experiments.cli import main
from mmoe_annotated.experiments.merge import merge_census_runs

from tests.experiments.test_census import write_pair


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("census") / "data"
    write_pair(folder, train_rows=300, test_rows=200)
    return folder


def run(sample, out, *extra) -> int:
    return main(["census", "--out", str(out), "--data", str(sample), "--no-progress", *map(str, extra)])


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"patience": 0}, "patience must be a whole number >= 1"),
    ({"patience": True}, "patience must be a whole number"),
    ({"search_seeds": 0}, "search_seeds must be a whole number"),
    ({"gradnorm_alpha": -0.5}, "gradnorm_alpha must be a non-negative number"),
    ({"balance_lr": 0.0}, "balance_lr must be None or a positive number"),
    ({"models": ("single_task",), "task_balancing": "uncertainty_normalized"}, "Single-Task trains one"),
])
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        study.CensusExperiment(**kwargs)


def test_patience_stops_through_fits_early_stopping(sample):
    train, test = census.load_census(path=sample)
    exp = study.CensusExperiment(patience=3, epochs=20, task_balancing="gradnorm", gradnorm_alpha=0.12,
                                 balance_lr=0.05, models=("mmoe",))
    data = study.prepare(train, test, exp)
    kind, mc, tc = _configs("mmoe/group2", exp, exp.hparams_of("mmoe/group2"), 0, data)
    assert tc.early_stopping == mm.EarlyStopping(metric="auc", tasks=("education",), patience=3, restore="best")
    assert (tc.epochs, tc.gradnorm_alpha, tc.balance_lr, tc.task_balancing) == (20, 0.12, 0.05, "gradnorm")
    old = study.CensusExperiment()  # the shipped runs' protocol: fixed epochs, no stopping
    assert old.patience is None and old.epochs == 4
    assert _configs("mmoe/group2", old, old.hparams_of("mmoe/group2"), 0, data)[2].early_stopping is None


# ---------------------------------------------------------------------------
# The command, end to end: early stopping, the new columns, curves, provenance
# ---------------------------------------------------------------------------

def test_tiny_run_with_patience_end_to_end(sample, tmp_path):
    out = tmp_path / "out"
    assert run(sample, out, "--seeds", 1, "--epochs", 8, "--patience", 2, "--max-train-rows", 200,
               "--models", "single_task", "mmoe", "cgc") == 0
    results, curves = pd.read_csv(out / "results.csv"), pd.read_csv(out / "curves.csv")
    assert set(study.RESULT_COLUMNS + study.TRAINING_COLUMNS) <= set(results.columns)
    assert results["epochs_run"].between(1, 8).all() and (results["best_epoch"] <= results["epochs_run"]).all()
    stopped = results[results["epochs_run"] < 8]
    assert (stopped["epochs_run"] - stopped["best_epoch"] == 2).all()  # stopped after 2 epochs without gain
    assert list(curves.columns) == study.CURVE_COLUMNS and set(curves["model"]) == {"single_task", "mmoe", "cgc"}
    for (model, group), part in results[(results["role"] == "main") & (results["split"] == "valid")].groupby(
            ["model", "group"]):
        r = part.iloc[0]
        curve = curves[(curves["model"] == model) & (curves["group"] == group)
                       & (curves["column"] == f"valid_{r['task']}_auc")].set_index("epoch")["value"]
        assert curve.index.tolist() == list(range(1, int(r["epochs_run"]) + 1))
        # the scored model is the best epoch's (restore="best"): its validation AUC is the curve's best
        assert r["auc"] == pytest.approx(curve.max(), abs=1e-12) and curve.idxmax() == r["best_epoch"]
    params = results.groupby("model")["params"].first()
    assert params["single_task"] < params["mmoe"] and (results["params"] > 0).all()
    meta = json.loads((out / "run.json").read_text())
    assert meta["finished"] is True and meta["seeds_done"] == 1
    assert {"package_version", "commit", "torch_version", "device", "machine", "command"} <= set(meta)
    assert meta["command"].startswith("python -m mmoe_annotated.experiments census --out DIR --data DATA ")
    assert str(tmp_path) not in meta["command"]
    assert meta["settings"]["patience"] == 2 and meta["settings"]["epochs"] == 8


def test_fixed_epochs_still_train_every_epoch(sample, tmp_path):
    assert run(sample, tmp_path / "o", "--seeds", 1, "--epochs", 3, "--group", 1, "--models", "mmoe",
               "--balancing", "uncertainty_normalized") == 0
    results, curves = pd.read_csv(tmp_path / "o" / "results.csv"), pd.read_csv(tmp_path / "o" / "curves.csv")
    assert (results["epochs_run"] == 3).all() and results["best_epoch"].between(1, 3).all()
    weights = curves[curves["column"].str.endswith("_weight")].pivot(index="epoch", columns="column", values="value")
    np.testing.assert_allclose(weights.sum(axis=1), 2.0, rtol=1e-5)  # renormalised: they sum to T
    assert json.loads((tmp_path / "o" / "run.json").read_text())["settings"]["task_balancing"] == "uncertainty_normalized"


def test_old_tables_read_with_the_new_columns_missing():
    results, _, _ = study.load_census_run()
    assert not set(study.TRAINING_COLUMNS) & set(results.columns)
    filled = study.with_result_columns(results)
    assert filled[study.TRAINING_COLUMNS].isna().all().all() and len(filled) == len(results)


# ---------------------------------------------------------------------------
# The search: seeds and their mean, edges, budgets, grids
# ---------------------------------------------------------------------------

def _table(rows):
    return pd.DataFrame([{"family": f, "lr": lr, "experts": e, "units": u, "seed": s, "valid_auc": a}
                         for f, lr, e, u, s, a in rows])


def test_choose_takes_the_mean_over_search_seeds():
    table = _table([("mmoe/group1", 1e-3, 4, 32, 0, 0.90), ("mmoe/group1", 1e-3, 4, 32, 1, 0.80),
                    ("mmoe/group1", 3e-3, 4, 32, 0, 0.88), ("mmoe/group1", 3e-3, 4, 32, 1, 0.87)])
    assert study.choose(table) == {"mmoe/group1": {"lr": 3e-3, "experts": 4, "units": 32}}  # not the single 0.90
    # a table of the first protocol (one seed, no seed column) chooses as before
    shipped = pd.DataFrame(study.load_census_run()[2]["search"]["table"])
    assert study.choose(shipped) == study.DEFAULT_HPARAMS
    with pytest.raises(ValueError, match="empty"):
        study.choose(table.iloc[:0])


def test_grid_edges_name_the_choices_on_an_edge():
    rows = [("mmoe/group1", lr, e, u, s, 0.9 + (lr == 3e-2) * 0.01 + (e == 8) * 0.001)
            for lr in (1e-3, 3e-2) for e, u in ((4, 32), (8, 64), (16, 128)) for s in (0, 1)]
    edges = study.grid_edges(_table(rows))
    assert edges.to_dict(orient="records") == [
        {"family": "mmoe/group1", "hparam": "lr", "chosen": 3e-2, "low": 1e-3, "high": 3e-2, "edge": "high"}]
    every = study.grid_edges(_table(rows), only_edges=False).set_index("hparam")
    assert every.loc["experts", "edge"] == every.loc["units", "edge"] == ""  # (8, 64): inside on both
    assert "levels" not in every.index
    rows = [r for r in rows if r[3] != 128]  # without (16, 128), 64 units are the most tried
    assert study.grid_edges(_table(rows)).set_index("hparam").loc["units", "edge"] == "high"
    # the shipped first search chose the top learning rate everywhere
    shipped = pd.DataFrame(study.load_census_run()[2]["search"]["table"])
    lr_edges = study.grid_edges(shipped).query("hparam == 'lr'")
    assert set(lr_edges["edge"]) == {"high"} and len(lr_edges) == len(study.DEFAULT_HPARAMS)


def test_check_budget_wants_every_setting_with_every_seed_for_every_family_of_a_kind():
    full = [(f, lr, 4, 32, s, 0.9) for f in ("mmoe/group1", "omoe/group1") for lr in (1e-3, 3e-3) for s in (0, 1)]
    assert cs.check_budget(_table(full), 2) == []
    assert any("fewer than 3" in p for p in cs.check_budget(_table(full), 3))
    extended = full + [("mmoe/group1", 1e-2, 4, 32, s, 0.9) for s in (0, 1)]
    assert any("moe families were not tried alike" in p for p in cs.check_budget(_table(extended), 2))
    # a bottom family with more settings than the MoE families: a larger budget, whatever its kind
    bottom = [("shared_bottom/group1", lr, 1, u, s, 0.9) for lr in (1e-3, 3e-3) for u in (64, 128) for s in (0, 1)]
    assert any("different budgets" in p and "shared_bottom/group1 8" in p
               for p in cs.check_budget(_table(full + bottom), 2))
    assert cs.check_budget(_table(full + bottom[:4]), 2) == []


def test_the_grid_covers_the_papers_regime_and_every_family_of_a_kind_alike():
    assert cs.SEARCH_GRID["lr"] == (3e-4, 1e-3, 3e-3)
    assert [u for _, u in cs.SEARCH_GRID["bottom"]] == [64, 128, 256]
    assert {(4, 32), (8, 64)} <= set(cs.SEARCH_GRID["moe"])
    assert len(cs.grid_of("omoe/group1")) == len(cs.grid_of("mmoe/group2")) == 9
    assert len(cs.grid_of("single_task/education")) == len(cs.grid_of("cgc/group2")) == 9
    assert cs.grid_of("single_task/income") == cs.grid_of("shared_bottom/group1")
    assert all(hp["levels"] == 2 for hp in cs.grid_of("ple/group1"))
    with pytest.raises(ValueError, match="not searched"):
        cs.grid_of("mmoe_matched/group1")


def test_make_grid_from_the_command_line_and_a_file(tmp_path):
    grid = cs.make_grid(lrs=["0.1", "3e-2"], sizes=["2048", "16x128", "2x4x32"])
    assert grid["lr"] == (0.1, 0.03) and grid["bottom"] == ((1, 2048),) and grid["moe"] == ((16, 128),)
    assert grid["extraction"] == ((2, 4, 32),)
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"lr": [1e-2], "bottom": [64, 2048], "moe": [[4, 16]]}))
    grid = cs.make_grid(grid_file=path, sizes=["8x8"])
    assert grid["bottom"] == ((1, 64), (1, 2048)) and grid["moe"] == ((8, 8),) and grid["lr"] == (1e-2,)
    assert grid["extraction"] == cs.SEARCH_GRID["extraction"]
    for bad, match in (({"lrs": ["-1"]}, "--lrs: learning rates must be positive"),
                       ({"sizes": ["8x"]}, "--sizes: '8x' is not UNITS"),
                       ({"sizes": ["1x2x3x4"]}, "is not UNITS")):
        with pytest.raises(ValueError, match=match):
            cs.make_grid(**bad)
    path.write_text(json.dumps({"moe": [64]}))
    with pytest.raises(ValueError, match=r"grid\.json: every size of 'moe' must have 2 part"):
        cs.make_grid(grid_file=path)
    path.write_text(json.dumps({"bottoms": [64]}))
    with pytest.raises(ValueError, match="keys among"):
        cs.make_grid(grid_file=path)


def test_load_search_reads_the_shipped_tables():
    assert len(cs.load_search("census")) == len(study.load_census_run()[2]["search"]["table"])
    ple = cs.load_search("census_ple")
    assert set(ple["family"]) == {f"{m}/group{g}" for m in ("cgc", "ple") for g in (1, 2)}
    with pytest.raises(ValueError, match="records no search"):
        cs.load_search("census_balancing")


def test_search_parts_resume_extend_and_feed_the_final_runs(sample, tmp_path):
    s = tmp_path / "search"
    base = ["--seeds", 1, "--epochs", 2, "--patience", 1, "--group", 1, "--search", "--search-only"]
    assert run(sample, s, *base, "--models", "mmoe", "omoe", "--lrs", 1e-3, 3e-2, "--sizes", "4x8", "8x8") == 0
    table = pd.read_csv(s / "search.csv")
    assert len(table) == 2 * 2 * 2 * 2 and set(table["seed"]) == {10_000, 10_001}  # families x lrs x sizes x seeds
    assert {"best_epoch", "epochs_run", "params"} <= set(table.columns)
    assert json.loads((s / "run.json").read_text())["finished"] is True and not (s / "results.csv").exists()
    with pytest.raises(SystemExit, match="already holds a run"):
        run(sample, s, *base, "--models", "mmoe", "omoe")
    # the grid extended, resumed: only the new settings train, the old rows stay as they were
    assert run(sample, s, *base, "--models", "mmoe", "omoe", "--lrs", 1e-3, 3e-2, 1e-1, "--sizes", "4x8", "8x8",
               "--resume") == 0
    extended = pd.read_csv(s / "search.csv")
    assert len(extended) == 24 and extended.iloc[:16].equals(table)
    meta = json.loads((s / "run.json").read_text())
    assert len(meta["commands"]) == 2 and meta["search"]["grid"]["lr"] == [1e-3, 3e-2, 1e-1]
    changed = [*base[:5], 2, *base[6:]]  # --patience 2: refused before anything trains
    assert changed[4:6] == ["--patience", 2]
    with pytest.raises(SystemExit, match=r"other settings \(patience\)"):
        run(sample, s, *changed, "--models", "mmoe", "omoe", "--lrs", 1e-1, "--sizes", "4x8", "8x8", "--resume")
    assert len(pd.read_csv(s / "search.csv")) == 24
    edges = pd.read_csv(s / "edges.csv")
    assert list(edges.columns) == ["family", "hparam", "chosen", "low", "high", "edge"]
    # the final runs read the search's choices, and keep its table
    final = tmp_path / "final"
    assert run(sample, final, "--seeds", 1, "--epochs", 2, "--patience", 1, "--group", 1, "--models", "mmoe",
               "--search-from", s) == 0
    chosen = study.choose(extended)
    assert json.loads((final / "hparams.json").read_text())["mmoe/group1"] == chosen["mmoe/group1"]
    assert len(pd.read_csv(final / "search.csv")) == 24
    with pytest.raises(SystemExit, match=r"tried no setting of \['shared_bottom/group1'\]"):
        run(sample, tmp_path / "x", "--seeds", 1, "--epochs", 1, "--group", 1, "--models", "shared_bottom",
            "--search-from", s)
    assert main(["edges", str(s), "--search-seeds", "2"]) == 0


def test_resume_continues_the_seeds_of_a_stopped_run(sample, tmp_path):
    out = tmp_path / "out"
    common = ["--epochs", 2, "--group", 2, "--models", "shared_bottom"]
    assert run(sample, out, "--seeds", 1, *common) == 0
    first = pd.read_csv(out / "results.csv")
    assert run(sample, out, "--seeds", 3, *common, "--resume") == 0
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["seed"].unique()) == [0, 1, 2] and results.iloc[:len(first)].equals(first)
    assert json.loads((out / "run.json").read_text())["seeds_done"] == 3
    alone = tmp_path / "alone"
    assert run(sample, alone, "--seeds", 3, *common) == 0  # the same numbers as one run of three seeds
    np.testing.assert_allclose(pd.read_csv(alone / "results.csv")["auc"], results["auc"], rtol=0, atol=1e-12)
    with pytest.raises(SystemExit, match=r"other settings \(epochs\)"):
        run(sample, out, "--seeds", 3, "--epochs", 3, "--group", 2, "--models", "shared_bottom", "--resume")


# ---------------------------------------------------------------------------
# The parameter-matched MMoE
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("ple", [None, {"experts": 2, "shared": 2, "units": 16}, {"experts": 1, "shared": 1,
                                                                                    "units": 64}])
def test_matched_mmoe_has_ples_parameter_count(ple, sample):
    hp = {f"ple/group{g}": {"lr": 1e-2, **ple, "levels": 2} for g in (1, 2)} if ple else {}
    exp = study.CensusExperiment(models=("ple", "mmoe_matched"), hparams=hp)
    for g in (1, 2):
        m = matched_hparams(exp, g)
        assert m["matched_to"] == f"ple/group{g}" and m["target_params"] == family_params(f"ple/group{g}", exp,
                                                                                         exp.hparams_of(f"ple/group{g}"))
        assert abs(m["params"] - m["target_params"]) <= 0.05 * m["target_params"]
        p = exp.hparams_of(f"ple/group{g}")
        assert m["experts"] == 2 * p["experts"] + p["shared"] and m["lr"] == study.DEFAULT_HPARAMS[f"mmoe/group{g}"]["lr"]
    # the counts need no data: the real encoder's features give the same
    train, test = census.load_census(path=sample)
    data = study.prepare(train, test, exp)
    kind, mc, _ = _configs("mmoe_matched/group1", exp, exp.hparams_of("mmoe_matched/group1"), 0, data)
    built = mm.build_model(kind, mc).num_parameters(include_embedding=False)
    assert kind == "mmoe" and built == exp.hparams_of("mmoe_matched/group1")["params"]


def test_matched_mmoe_runs_beside_ple(sample, tmp_path):
    assert run(sample, tmp_path / "o", "--seeds", 1, "--epochs", 1, "--group", 2, "--models", "ple",
               "mmoe_matched") == 0
    results = pd.read_csv(tmp_path / "o" / "results.csv")
    params = results.groupby("model")["params"].first()
    assert abs(params["mmoe_matched"] / params["ple"] - 1) <= 0.05
    hp = json.loads((tmp_path / "o" / "hparams.json").read_text())["mmoe_matched/group2"]
    assert hp["params"] == params["mmoe_matched"] and hp["target_params"] == params["ple"]
    gates = pd.read_csv(tmp_path / "o" / "gates.csv")
    assert set(gates["model"]) == {"ple", "mmoe_matched"}


# ---------------------------------------------------------------------------
# Merge: what it refuses, what it ships
# ---------------------------------------------------------------------------

def test_merge_refuses_unfinished_parts_and_other_training_settings(sample, tmp_path):
    common = ["--seeds", 1, "--epochs", 2, "--models", "mmoe"]
    assert run(sample, tmp_path / "g1", *common, "--group", 1, "--patience", 1) == 0
    assert run(sample, tmp_path / "g2", *common, "--group", 2) == 0
    with pytest.raises(ValueError, match=r"differ in the training setting 'patience': 1 \(.*g1\), null"):
        merge_census_runs([tmp_path / "g1", tmp_path / "g2"], tmp_path / "m", "x")
    assert run(sample, tmp_path / "g2p", *common, "--group", 2, "--patience", 1, "--gradnorm-alpha", 0.5) == 0
    merge_census_runs([tmp_path / "g1", tmp_path / "g2p"], tmp_path / "m", "ok")  # alpha unused by "fixed"
    meta = json.loads((tmp_path / "g1" / "run.json").read_text())
    (tmp_path / "g1" / "run.json").write_text(json.dumps({**meta, "finished": False}))
    with pytest.raises(ValueError, match=r"g1 did not finish.*--resume"):
        merge_census_runs([tmp_path / "g1", tmp_path / "g2p"], tmp_path / "m", "x")
    with pytest.raises(SystemExit, match="did not finish"):
        main(["merge", "--out", str(tmp_path / "m"), "--name", "x", str(tmp_path / "g1"), str(tmp_path / "g2p")])
    # the same family with other hyper-parameters is refused
    (tmp_path / "hp.json").write_text(json.dumps({"mmoe/group2": {"lr": 0.01, "experts": 2, "units": 8}}))
    assert run(sample, tmp_path / "g2h", *common, "--group", 2, "--patience", 1, "--first-seed", 5,
               "--hparams", tmp_path / "hp.json") == 0
    with pytest.raises(ValueError, match="mmoe/group2 was trained with other hyper-parameters"):
        merge_census_runs([tmp_path / "g2p", tmp_path / "g2h"], tmp_path / "m", "x")


def test_merge_labels_weightings_and_ships_curves_search_and_provenance(sample, tmp_path):
    common = ["--seeds", 1, "--epochs", 2, "--patience", 1, "--group", 1, "--models", "mmoe"]
    parts = {"u": ["--balancing", "uncertainty"], "n": ["--balancing", "uncertainty_normalized"],
             "a": ["--balancing", "gradnorm", "--gradnorm-alpha", 0.12], "b": ["--balancing", "gradnorm"]}
    s = tmp_path / "s"
    assert run(sample, s, *common, "--search", "--search-only", "--lrs", 1e-2, "--sizes", "4x8") == 0
    for name, extra in {**parts, "f": []}.items():  # every part on the search's choice
        assert run(sample, tmp_path / name, *common, *extra, "--search-from", s) == 0
    record = merge_census_runs([tmp_path / n for n in (*parts, "f")], tmp_path / "m", "bal", note="test")
    results = pd.read_csv(tmp_path / "m" / "bal.csv.gz")
    runs = results.groupby(["balancing", "gradnorm_alpha"], dropna=False).size()
    assert len(runs) == 5 and runs.loc[("gradnorm", 0.12)] == runs.loc[("gradnorm", 1.5)] == 4
    assert results.loc[results["balancing"] != "gradnorm", "gradnorm_alpha"].isna().all()
    curves = pd.read_csv(tmp_path / "m" / "bal_curves.csv.gz")
    assert set(curves["balancing"]) == {"fixed", "uncertainty", "uncertainty_normalized", "gradnorm"}
    assert len(pd.read_csv(tmp_path / "m" / "bal_search.csv.gz")) == 2  # one setting x two search seeds
    assert record["finished"] is True and record["settings"]["patience"] == 1 and record["note"] == "test"
    assert {"package_version", "commit", "torch_version", "device", "machine"} <= set(record)
    assert all({"commit", "package_version", "command"} <= set(p) for p in record["parts"])
    assert "--out DIR" in record["command"] and str(tmp_path / "u") not in record["command"]
    loaded = pd.read_csv(tmp_path / "m" / "bal_gates.csv.gz")
    assert set(loaded["balancing"]) == set(results["balancing"])
    # the learned weights per epoch, one line per weighting and task; the plain sum records none
    import matplotlib.pyplot as plt

    ax = study.plot_task_weights(curves, group=1)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"{how}: {task}" for how in ("gradnorm, gradnorm_alpha 0.12", "gradnorm, gradnorm_alpha 1.5",
                                                   "uncertainty", "uncertainty_normalized")
                      for task in ("income", "never_married")]
    weights = curves[curves["column"] == "train_income_weight"]
    thick = [line for line in ax.get_lines() if line.get_linewidth() == 2]
    u = weights[weights["balancing"] == "uncertainty"].groupby("epoch")["value"].median()
    np.testing.assert_allclose(thick[4].get_ydata(), u.to_numpy())
    with pytest.raises(ValueError, match="no learned task weights"):
        study.plot_task_weights(curves[curves["balancing"] == "fixed"], group=1)
    plt.close("all")


def test_a_search_split_by_seed_into_parts_chooses_on_both(sample, tmp_path):
    base = ["--epochs", 1, "--group", 2, "--models", "shared_bottom", "--search", "--search-only", "--lrs", 1e-2,
            3e-2, "--sizes", 8, 16, "--search-seeds", 1]
    for seed in (10_000, 10_001):
        assert run(sample, tmp_path / f"s{seed}", *base, "--search-seed", seed) == 0
    parts = [tmp_path / "s10000", tmp_path / "s10001"]
    table = pd.concat([pd.read_csv(p / "search.csv") for p in parts], ignore_index=True)
    assert cs.check_budget(table, 2) == []
    final = tmp_path / "final"
    assert run(sample, final, "--seeds", 1, "--epochs", 1, "--group", 2, "--models", "shared_bottom",
               "--search-from", *parts) == 0
    assert json.loads((final / "hparams.json").read_text())["shared_bottom/group2"] == \
        study.choose(table)["shared_bottom/group2"]
    # one seed alone breaks the rule of two seeds per setting: the final runs refuse it
    with pytest.raises(SystemExit, match="fewer than 2"):
        run(sample, tmp_path / "one", "--seeds", 1, "--epochs", 1, "--group", 2, "--models", "shared_bottom",
            "--search-from", parts[0])
    (tmp_path / "bad.json").write_text(json.dumps({"mmoe": 3}))
    with pytest.raises(SystemExit, match=r"--hparams .*bad\.json: expected an object FAMILY"):
        run(sample, tmp_path / "bad", "--seeds", 1, "--epochs", 1, "--hparams", tmp_path / "bad.json")
    with pytest.raises(SystemExit, match="--search-only stops after the search: give --search too"):
        run(sample, tmp_path / "x", "--search-only")


def test_gate_control_follows_the_new_protocol(sample, tmp_path):
    """The identical-task control takes the runs' early stopping and chosen sizes: its real pair is
    the census run of the same family and seed."""
    from mmoe_annotated.experiments import census_control as control

    (tmp_path / "hp.json").write_text(json.dumps({"mmoe/group1": {"lr": 0.01, "experts": 2, "units": 8}}))
    control._main(["--out", str(tmp_path / "c"), "--data", str(sample), "--group", "1", "--seeds", "1",
                   "--epochs", "6", "--patience", "2", "--hparams", str(tmp_path / "hp.json"), "--pairs", "tasks"])
    meta = json.loads((tmp_path / "c" / "census_gate_control.json").read_text())
    assert meta["settings"]["patience"] == 2 and meta["settings"]["hparams"]["mmoe/group1"]["experts"] == 2
    assert run(sample, tmp_path / "r", "--seeds", 1, "--epochs", 6, "--patience", 2, "--group", 1, "--models", "mmoe",
               "--hparams", tmp_path / "hp.json") == 0
    shipped = pd.read_csv(tmp_path / "r" / "results.csv").query("split == 'test' and role == 'main'")["auc"]
    pair = pd.read_csv(tmp_path / "c" / "census_gate_control.csv.gz")
    assert pair["auc_a"].iat[0] == pytest.approx(shipped.iat[0], abs=1e-6)


def test_stopping_budget_and_curves_read_a_run_and_its_search(sample, tmp_path):
    import matplotlib.pyplot as plt

    out = tmp_path / "out"
    assert run(sample, out, "--seeds", 2, "--epochs", 6, "--patience", 1, "--max-train-rows", 200,
               "--models", "single_task", "mmoe", "--search", "--lrs", 1e-2, 3e-2, "--sizes", 8, "2x4",
               "--search-seeds", 1) == 0
    results, curves = pd.read_csv(out / "results.csv"), pd.read_csv(out / "curves.csv")
    table = study.stopping(results, cap=6)
    families = ["single_task/income", "single_task/education", "single_task/never_married", "mmoe/group1",
                "mmoe/group2"]
    assert sorted(table.index) == sorted(families) and (table["trainings"] == 2).all()
    for key, r in table.iterrows():  # against the results rows of that family's main task
        model, _, rest = key.partition("/")
        rows = results[(results["model"] == model) & (results["split"] == "test")]
        rows = rows[rows["task"] == rest] if model == "single_task" else rows[rows["group"] == int(rest[-1])]
        runs = rows.drop_duplicates("seed")
        assert r["stopped"] == (runs["epochs_run"] < 6).sum()
        assert r["stopped_share"] == r["stopped"] / 2 and r["epochs_run"] == runs["epochs_run"].median()
    assert table.loc["mmoe/group1", "params"] > table.loc["single_task/income", "params"]
    search = pd.read_csv(out / "search.csv")
    budget = study.search_budget(search)
    assert sorted(budget.index) == sorted(families)
    assert (budget["settings"] == 2).all() and (budget["seeds"] == 1).all() and (budget["trainings"] == 2).all()
    assert budget.loc["mmoe/group2", "epochs"] == search.query("family == 'mmoe/group2'")["epochs_run"].sum()
    assert budget["hours"].sum() == pytest.approx(search["seconds"].sum() / 3600)
    ax = study.plot_curves(curves, group=1)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["Single-Task", "MMoE"] and ax.get_ylabel() == "validation AUC (income)"
    thick = [line for line in ax.get_lines() if line.get_linewidth() == 2]
    mmoe = curves.query("model == 'mmoe' and group == 1 and column == 'valid_income_auc'")
    median = mmoe.groupby("epoch")["value"].median()
    first = mmoe.groupby("epoch")["value"].size() >= 1  # two seeds: half is one
    np.testing.assert_allclose(thick[1].get_ydata(), median[first].to_numpy())
    plt.close("all")


def test_refine_steps_one_learning_rate_beyond_the_grid_where_the_auc_rises():
    def table(auc_by_lr, big=0.0):
        rows = [("mmoe/group1", lr, e, u, s, auc + (e == 8) * big) for lr, auc in auc_by_lr.items()
                for e, u in ((4, 32), (8, 64)) for s in (0, 1)]
        return _table(rows)

    # the lowest rate wins: one step below, at the chosen size
    assert cs.refine(table({3e-4: 0.95, 1e-3: 0.94, 3e-3: 0.93}, big=0.001)) == {
        "mmoe/group1": {"lr": 1e-4, "experts": 8, "units": 64}}
    assert cs.refine(table({3e-4: 0.93, 1e-3: 0.94, 3e-3: 0.95}))["mmoe/group1"]["lr"] == 1e-2
    # inside the grid: beyond the better neighbour
    assert cs.refine(table({3e-4: 0.945, 1e-3: 0.95, 3e-3: 0.94}))["mmoe/group1"]["lr"] == 1e-4
    assert cs.refine(table({3e-4: 0.94, 1e-3: 0.95, 3e-3: 0.945}))["mmoe/group1"]["lr"] == 1e-2
    # the neighbours are read at the chosen size, not over every size
    rows = [("mmoe/group1", lr, 4, 32, s, a) for lr, a in ((3e-4, 0.949), (1e-3, 0.95), (3e-3, 0.94))
            for s in (0, 1)]
    rows += [("mmoe/group1", lr, 8, 64, s, a) for lr, a in ((3e-4, 0.90), (1e-3, 0.90), (3e-3, 0.948))
             for s in (0, 1)]
    assert cs.refine(_table(rows)) == {"mmoe/group1": {"lr": 1e-4, "experts": 4, "units": 32}}
    with pytest.raises(ValueError, match="not on LR_LADDER"):
        cs.refine(table({2e-4: 0.95, 1e-3: 0.94}))
    with pytest.raises(ValueError, match="no learning rate on LR_LADDER beyond 1e-05"):
        cs.refine(table({1e-5: 0.95, 3e-5: 0.94}))


def test_a_second_stage_keeps_every_familys_budget_equal(sample, tmp_path):
    base = ["--epochs", 2, "--patience", 1, "--group", 1, "--models", "single_task", "mmoe", "--search",
            "--search-only", "--lrs", 1e-3, 3e-3, 1e-2, "--sizes", 8, "2x4", "--search-seeds", 1]
    parts = []
    for seed in (10_000, 10_001):
        assert run(sample, tmp_path / f"s{seed}", *base, "--search-seed", seed) == 0
        parts.append(tmp_path / f"s{seed}")
    first = pd.concat([pd.read_csv(p / "search.csv") for p in parts], ignore_index=True)
    assert (first["stage"] == 1).all()
    want = cs.refine(first)
    for seed in (10_000, 10_001):
        out = tmp_path / f"r{seed}"
        assert run(sample, out, *base, "--search-seed", seed, "--refine", *parts[:2]) == 0
        second = pd.read_csv(out / "search.csv")
        assert (second["stage"] == 2).all() and len(second) == len(want)  # one setting per family
        for r in second.to_dict(orient="records"):
            assert r["lr"] == want[r["family"]]["lr"] and r["units"] == want[r["family"]]["units"]
        meta = json.loads((out / "run.json").read_text())
        assert meta["search"]["refined"] == json.loads(json.dumps(want))
        parts.append(out)
    table = pd.concat([pd.read_csv(p / "search.csv") for p in parts], ignore_index=True)
    assert cs.check_budget(table, 2) == []  # the second stage differs by family, not in size
    assert set(table.groupby("family").size()) == {(3 + 1) * 2}  # three rates, one size, then one more
    final = tmp_path / "final"
    assert run(sample, final, "--seeds", 1, "--epochs", 2, "--patience", 1, "--group", 1, "--models", "single_task",
               "mmoe", "--search-from", *parts) == 0
    chosen = json.loads((final / "hparams.json").read_text())
    assert chosen["mmoe/group1"] == study.choose(table)["mmoe/group1"]
    every = cs.grid_edges(table, only_edges=False).query("hparam == 'lr'")
    assert ((every["high"] == 3e-2) | (every["low"] == 3e-4)).all()  # one step beyond the grid
    assert ((every["high"] == 3e-2) != (every["low"] == 3e-4)).all()
    with pytest.raises(SystemExit, match="--refine trains a second search stage"):
        run(sample, tmp_path / "bad", "--refine", *parts[:2])


def test_a_search_part_records_every_invocation_and_its_time(sample, tmp_path, monkeypatch):
    from mmoe_annotated.experiments import census_search

    out = tmp_path / "s"
    base = ["--epochs", 1, "--group", 1, "--models", "mmoe", "--search", "--search-only", "--lrs", 1e-2, 3e-2,
            "--sizes", "2x4", "--search-seeds", 1]
    real, calls = census_search.train_one, []

    def killed_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # the part is stopped during its second training
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(census_search, "train_one", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run(sample, out, *base)
    first = json.loads((out / "run.json").read_text())
    assert first["finished"] is False and len(pd.read_csv(out / "search.csv")) == 1
    assert [i["command"] for i in first["invocations"]] == [first["command"]] and first["seconds"] > 0
    assert first["settings"]["search_seeds"] == 1
    with pytest.raises(SystemExit, match="already holds a run"):
        run(sample, out, *base)  # without --resume
    monkeypatch.setattr(census_search, "train_one", real)
    assert run(sample, out, *base, "--resume") == 0
    done = json.loads((out / "run.json").read_text())
    assert done["finished"] is True and len(pd.read_csv(out / "search.csv")) == 2
    assert len(done["invocations"]) == 2 and done["invocations"][0] == first["invocations"][0]
    assert done["invocations"][1]["command"].endswith("--resume") and done["seconds"] >= first["seconds"]
    assert {"commit", "package_version", "torch_version", "device"} <= set(done["invocations"][1])
    with pytest.raises(SystemExit, match="other settings"):
        run(sample, out, *[str(a) if a != 1 else 2 for a in base[:2]], *base[2:], "--resume")
