import sys, json, torch
torch.set_num_threads(1)
from mmoe_annotated.data import census
from mmoe_annotated.experiments.census_protocol import CensusExperiment, prepare, train_one
from mmoe_annotated.experiments.census_search import best_epoch
tr, te = census.load_census()
exp = CensusExperiment(epochs=200, patience=5)
data = prepare(tr, te, exp)
for spec in sys.argv[1:]:
    key, lr, e, u = spec.split(",")
    hp = {"lr": float(lr), "experts": int(e), "units": int(u)}
    m, h, met, s = train_one(key, exp, hp, 10000, data, with_history=True)
    main = key.split("/")[1] if key.startswith("single") else ("income" if key.endswith("1") else "education")
    print(key, hp, "valid", round(met["valid"][main]["auc"], 5), "best", best_epoch(h, main), "ran", len(h), "s", round(s), flush=True)
