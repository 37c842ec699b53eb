"""crowd-kit's MajorityVote, DawidSkene (n_iter=100) and GLAD (defaults), offline, on crowd folders.

Runs under the benchmark venv (crowd-kit and pandas are not dependencies of the project); prints
one JSON object: {"crowdkit_version": ..., "crowds": {folder: {method: {...}}}}. Accuracy is over
the truth questions that have answers, as ``python -m aggregation replay`` measures it. Ids are
read as strings. MajorityVote breaks ties by the first label in crowd-kit's column order (the
order labels first appear in the file); the number of tied items is reported with it.

    .venv-bench/bin/python bench/crowds/crowdkit_baselines.py CROWD_DIR [CROWD_DIR ...]
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from crowdkit.aggregation import GLAD, DawidSkene, MajorityVote


def load(folder: Path) -> tuple[pd.DataFrame, pd.Series]:
    answers = pd.read_csv(folder / "answers.csv", dtype=str, skipinitialspace=True)
    answers.columns = [c.strip().lower() for c in answers.columns]
    df = pd.DataFrame({"task": answers["question"].str.strip(), "worker": answers["worker"].str.strip(),
                       "label": answers["answer"].astype(int)})
    truth = pd.read_csv(folder / "truth.csv", dtype=str, skipinitialspace=True)
    truth.columns = [c.strip().lower() for c in truth.columns]
    labels = pd.Series(truth["truth"].astype(int).to_numpy(), index=truth["question"].str.strip())
    labels = labels[~labels.index.duplicated()]
    return df, labels[labels.index.isin(df["task"].unique())]


def accuracy(predicted: pd.Series, truth: pd.Series) -> float:
    return float((predicted.reindex(truth.index).to_numpy() == truth.to_numpy()).mean())


def run(folder: Path) -> dict:
    df, truth = load(folder)
    out: dict = {}
    for name, model in (("MV", MajorityVote()), ("DS", DawidSkene(n_iter=100)), ("GLAD", GLAD())):
        start = time.perf_counter()
        predicted = model.fit_predict(df)
        row = {"accuracy": accuracy(predicted, truth), "seconds": time.perf_counter() - start}
        if name == "MV":
            probas = model.probas_
            row["ties"] = int((probas.eq(probas.max(axis=1), axis=0).sum(axis=1) > 1).sum())
        out[name] = row
    return out


def main(argv: list[str]) -> int:
    result = {"crowdkit_version": version("crowd-kit"), "pandas_version": pd.__version__,
              "crowds": {folder: run(Path(folder)) for folder in argv}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
