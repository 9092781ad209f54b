import sys, json, torch
torch.set_num_threads(1)
from mmoe_annotated.data import census
from mmoe_annotated.experiments.census_protocol import CensusExperiment, prepare, train_one
from mmoe_annotated.experiments.census_search import best_epoch
tr, te = census.load_census()
key, lr, u, seed, pat = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
exp = CensusExperiment(epochs=200, patience=pat)
data = prepare(tr, te, exp)
m, h, met, s = train_one(key, exp, {"lr": lr, "experts": 1, "units": u}, seed, data, with_history=True)
task = key.split("/")[1]
print(key, lr, u, seed, "patience", pat, "valid", round(met["valid"][task]["auc"], 5), "best", best_epoch(h, task), "ran", len(h), "s", round(s), flush=True)
print([round(v, 5) for v in h[f"valid_{task}_auc"]])
