"""Where the parts stand: python runs/census/status.py > runs/census/STATUS.md"""
import json
from pathlib import Path

import pandas as pd

from mmoe_annotated.experiments import census_search as cs
from mmoe_annotated.experiments.census_protocol import CensusExperiment

here = Path(__file__).parent
#: The models of each search part, by the folder's name: search_<kind>_<seed>.
PARTS = {"bottom": ("single_task", "shared_bottom"), "mmoe": ("mmoe",), "omoe": ("omoe",), "ext": ("cgc", "ple")}
print("| part | trainings done | of | finished |\n|---|---|---|---|")
for folder in sorted(p for p in here.iterdir() if p.is_dir() and p.name != "pilot"):
    record = folder / "run.json"
    meta = json.loads(record.read_text()) if record.is_file() else {}
    search = folder.name.startswith(("search_", "refine_"))
    models = PARTS.get(folder.name.split("_")[1]) if search else None
    table = folder / ("search.csv" if search else "results.csv")
    done = len(pd.read_csv(table)) if table.is_file() else 0
    want = "?"
    if search and models:
        exp = CensusExperiment(models=tuple(models), search_seeds=1)
        keys = [k for k in exp.families() if not k.startswith("mmoe_matched")]
        want = len(keys) if folder.name.startswith("refine_") else sum(len(cs.grid_of(k)) for k in keys)
    print(f"| {folder.name} | {done} | {want} | {meta.get('finished', False)} |")
