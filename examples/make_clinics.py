"""Write ``examples/clinics.csv``: a small synthetic multi-site table for ``metaauto pipeline --collection``.

Twelve clinics, 30 patients each, one row per patient: the clinic (the task column), five measurements
and a 0/1 ``outcome``. Each clinic has its own case mix (a shifted age and blood-pressure distribution)
and its own outcome rate (40-60%), and the outcome depends on the measurements through the same rule
everywhere plus a clinic-specific offset -- the structure few-shot transfer across sites exploits.
Synthetic and deterministic (seed 0); not medical data.

    python examples/make_clinics.py            # rewrites examples/clinics.csv
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "clinics.csv"


def make(clinics: int = 12, patients: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for c in range(clinics):
        age_shift, bp_shift = rng.normal(0, 6), rng.normal(0, 8)
        positives = int(round(patients * rng.uniform(0.4, 0.6)))
        outcome = np.r_[np.ones(positives, dtype=int), np.zeros(patients - positives, dtype=int)]
        rng.shuffle(outcome)
        signal = outcome * 1.0 + rng.normal(0, 0.35)  # the clinic offset moves every patient the same way
        frames.append(pd.DataFrame({
            "clinic": f"C{c + 1:02d}",
            "age": np.round(55 + age_shift + 8 * signal + rng.normal(0, 9, patients)).astype(int),
            "systolic_bp": np.round(128 + bp_shift + 10 * signal + rng.normal(0, 12, patients)).astype(int),
            "cholesterol": np.round(205 + 25 * signal + rng.normal(0, 30, patients)).astype(int),
            "bmi": np.round(26 + 2.0 * signal + rng.normal(0, 3.5, patients), 1),
            "smoker": (rng.uniform(size=patients) < 0.2 + 0.25 * outcome).astype(int),
            "outcome": outcome,
        }))
    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    make().to_csv(OUT, index=False)
    print(f"wrote {OUT}")
