"""Peer side of benchmarks/uplift.py, run in its own virtualenv (scikit-uplift, causalml, LightGBM): fit the
peers on the same split with the same LightGBM settings, predict the test rows, and recompute our models'
metrics with scikit-uplift's own functions (a cross-check of campaigns.uplift.metrics).

    benchmarks/.venv-uplift/bin/python benchmarks/uplift_side.py WORK_DIR OUTCOME PARAMS_JSON
Reads WORK_DIR/train.csv, test.csv (features, treatment, outcomes) and ours_<OUTCOME>.csv; writes
WORK_DIR/peers_<OUTCOME>.csv (one column of predicted uplift per peer) and sklift_<OUTCOME>.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier, LGBMRegressor


def frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)  # numeric only: the main script one-hot encodes the categorical columns


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    work, outcome, params = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    from causalml.inference.meta import BaseXClassifier
    from sklift.metrics import qini_auc_score, uplift_at_k, uplift_auc_score
    from sklift.models import ClassTransformation, TwoModels

    train, test = frame(work / "train.csv"), frame(work / "test.csv")
    features = [c for c in train.columns if c not in ("treatment", "visit", "conversion")]
    lgb = dict(
        n_estimators=params["n_estimators"],
        learning_rate=params["learning_rate"],
        num_leaves=params["num_leaves"],
        min_child_samples=params["min_child_samples"],
        reg_lambda=params["reg_lambda"],
        subsample=params["subsample"],
        subsample_freq=1 if params["subsample"] < 1 else 0,
        colsample_bytree=params["colsample_bytree"],
        n_jobs=1,
        random_state=0,
        verbose=-1,
        deterministic=True,
        force_row_wise=True,
    )
    x, t, y = train[features], train["treatment"].to_numpy(), train[outcome].to_numpy()
    out, seconds = {}, {}
    started = time.perf_counter()
    two = TwoModels(estimator_trmnt=LGBMClassifier(**lgb), estimator_ctrl=LGBMClassifier(**lgb), method="vanilla")
    out["sklift_two_models"] = two.fit(x, y, t).predict(test[features])
    seconds["sklift_two_models"] = time.perf_counter() - started
    started = time.perf_counter()
    ct = ClassTransformation(estimator=LGBMClassifier(**lgb))
    out["sklift_class_transformation"] = ct.fit(x, y, t).predict(test[features])
    seconds["sklift_class_transformation"] = time.perf_counter() - started
    started = time.perf_counter()
    xl = BaseXClassifier(outcome_learner=LGBMClassifier(**lgb), effect_learner=LGBMRegressor(**lgb), control_name=0)
    p_train, p_test = np.full(len(train), t.mean()), np.full(len(test), t.mean())
    xl.fit(x, t, y, p=p_train)
    out["causalml_x_learner"] = np.asarray(xl.predict(test[features], p=p_test)).ravel()
    seconds["causalml_x_learner"] = time.perf_counter() - started
    pd.DataFrame(out).to_csv(work / f"peers_{outcome}.csv", index=False)

    ours = pd.read_csv(work / f"ours_{outcome}.csv")
    yt, tt = test[outcome].to_numpy(), test["treatment"].to_numpy()
    check = {}
    for name in [*ours.columns, *out]:
        score = ours[name].to_numpy() if name in ours.columns else out[name]
        check[name] = {
            "qini_auc_score": float(qini_auc_score(yt, score, tt)),
            "uplift_auc_score": float(uplift_auc_score(yt, score, tt)),
            "uplift_at_30": float(uplift_at_k(yt, score, tt, strategy="overall", k=0.3)),
        }
    from importlib.metadata import version

    (work / f"sklift_{outcome}.json").write_text(
        json.dumps(
            {
                "metrics": check,
                "fit_seconds": seconds,
                "versions": {name: version(name) for name in ("scikit-uplift", "causalml", "lightgbm", "scikit-learn")},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
