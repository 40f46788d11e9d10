"""Use a registered meta-model in your own code: load it, adapt it to a new task, predict.

Run after `metaauto train --collection omniglot --algorithm protonet --register omniglot-5w1s ...`:

    python examples/downstream.py --model "models:/omniglot-5w1s@champion" --data-dir ../shared/data

The support and query sets here come from Omniglot's meta-test split, standing in for the handful of
labelled examples an application has for a new task: each row is a 28x28 drawing flattened to 784
pixel intensities (ink = 1.0), labels can be any strings.
"""

from __future__ import annotations

import argparse

import numpy as np

import metaauto
from metaauto.downstream.sklearn import FewShotClassifier
from metaauto.tasks import load_collection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/omniglot-5w1s@champion", help="models:/ or runs:/ URI")
    parser.add_argument("--data-dir", default=None, help="datasets directory (default: $METAAUTO_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    episode = load_collection("omniglot", data_dir=args.data_dir).sample("test", 5, 1, 15, tasks=1, seed=args.seed)
    names = np.array(["ka", "ga", "sa", "za", "ta"])
    X_support, y_support = episode.support_x[0].reshape(5, -1).numpy(), names[episode.support_y[0].numpy()]
    X_query, y_query = episode.query_x[0].reshape(75, -1).numpy(), names[episode.query_y[0].numpy()]

    model = metaauto.load(args.model)
    print(model)
    clf = model.adapt(X_support, y_support)  # a fitted scikit-learn classifier for this task
    print("predictions:", clf.predict(X_query[:10]))
    probabilities = clf.predict_proba(X_query[:1])[0]
    print("probabilities of the first query:", {str(c): round(float(p), 3) for c, p in zip(clf.classes_, probabilities)})
    print(f"accuracy on {len(y_query)} queries: {clf.score(X_query, y_query):.3f} (chance 0.2)")

    # the same through the scikit-learn wrapper, e.g. inside a Pipeline or cross-validation
    wrapped = FewShotClassifier(model_uri=args.model).fit(X_support, y_support)
    print(f"FewShotClassifier accuracy: {wrapped.score(X_query, y_query):.3f}")


if __name__ == "__main__":
    main()
