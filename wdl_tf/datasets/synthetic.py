"""A synthetic twin of the census data: same columns and file layout, learnable labels.

Labels come from a planted logistic model with both kinds of signal the paper names:
*generalization* (smooth effects of age, education, hours, capital gain, marital status that
the deep part captures) and *memorization* (a few specific education × occupation pairs that
sharply raise the positive rate, learnable through the wide cross). Fixed by the seed, so
tests can rely on a model learning it (AUC well above 0.5) in a few seconds.
"""

from __future__ import annotations

import os

import numpy as np

from wdl_tf import atomic

WORKCLASS = ["Private", "Self-emp-not-inc", "Local-gov", "State-gov", "Federal-gov", "?"]
EDUCATION = [  # (name, education_num)
    ("Preschool", 1),
    ("5th-6th", 3),
    ("HS-grad", 9),
    ("Some-college", 10),
    ("Assoc-voc", 11),
    ("Bachelors", 13),
    ("Masters", 14),
    ("Doctorate", 16),
]
MARITAL = ["Married-civ-spouse", "Never-married", "Divorced", "Widowed"]
OCCUPATION = [
    "Tech-support",
    "Craft-repair",
    "Sales",
    "Exec-managerial",
    "Prof-specialty",
    "Handlers-cleaners",
    "Adm-clerical",
    "Farming-fishing",
    "?",
]
RELATIONSHIP = ["Husband", "Wife", "Not-in-family", "Own-child", "Unmarried"]
RACE = ["White", "Black", "Asian-Pac-Islander", "Other"]
GENDER = ["Male", "Female"]
COUNTRY = ["United-States", "Mexico", "India", "Germany", "?"]
# Memorized pairs: the wide cross education × occupation can learn these.
PLANTED_PAIRS = {
    ("HS-grad", "Farming-fishing"),
    ("Some-college", "Sales"),
    ("5th-6th", "Tech-support"),
}


def _rows(n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    age = rng.integers(17, 80, n)
    edu = rng.integers(0, len(EDUCATION), n)
    occ = rng.integers(0, len(OCCUPATION), n)
    mar = rng.integers(0, len(MARITAL), n)
    hours = np.clip(rng.normal(40, 10, n).round(), 1, 99).astype(int)
    gain = np.where(rng.random(n) < 0.08, rng.integers(1000, 30000, n), 0)
    loss = np.where(rng.random(n) < 0.05, rng.integers(1000, 3000, n), 0)
    edu_num = np.array([EDUCATION[e][1] for e in edu])
    pair = np.array([(EDUCATION[e][0], OCCUPATION[o]) in PLANTED_PAIRS for e, o in zip(edu, occ)])
    logit = (
        -2.0
        + 0.04 * (age - 40)
        + 0.35 * (edu_num - 10)
        + 1.5 * (mar == 0)
        + 0.03 * (hours - 40)
        + 2.5 * (gain > 5000)
        + 4.0 * pair
    )
    label = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    pick = lambda values: [values[i] for i in rng.integers(0, len(values), n)]  # noqa: E731
    work, rel, race, sex, country = (
        pick(WORKCLASS),
        pick(RELATIONSHIP),
        pick(RACE),
        pick(GENDER),
        pick(COUNTRY),
    )
    fnlwgt = rng.integers(10_000, 500_000, n)
    lines = [
        ", ".join(
            str(v)
            for v in (
                age[i],
                work[i],
                fnlwgt[i],
                EDUCATION[edu[i]][0],
                edu_num[i],
                MARITAL[mar[i]],
                OCCUPATION[occ[i]],
                rel[i],
                race[i],
                sex[i],
                gain[i],
                loss[i],
                hours[i],
                country[i],
            )
        )
        for i in range(n)
    ]
    return lines, label


def _write(path: str, rows: int, rng: np.random.Generator, test_layout: bool) -> None:
    """Writes ``rows`` rows in chunks (never the whole file in memory), then renames."""
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            if test_layout:
                f.write("|1x3 Cross validator\n")
            done = 0
            while done < rows:
                n = min(10_000, rows - done)
                lines, label = _rows(n, rng)
                suffix = "." if test_layout else ""
                for line, y in zip(lines, label):
                    f.write(f"{line}, {'>50K' if y else '<=50K'}{suffix}\n")
                done += n


def write_census_twin(directory: str, rows: int = 4000, seed: int = 0) -> tuple[str, str]:
    """Writes (or reuses) train (``rows``) and test (``rows // 2``) files; returns their paths.

    The test file uses adult.test's layout (a "|1x3" first line, labels ending in ".").
    """
    if rows < 10:
        raise ValueError(f"synthetic_rows: must be >= 10, got {rows}")
    os.makedirs(directory, exist_ok=True)
    train = os.path.join(directory, f"census_synthetic_train_{rows}_{seed}.csv")
    test = os.path.join(directory, f"census_synthetic_test_{rows}_{seed}.csv")
    if not (os.path.exists(train) and os.path.exists(test)):
        rng = np.random.default_rng(seed)
        _write(train, rows, rng, test_layout=False)
        _write(test, max(rows // 2, 10), rng, test_layout=True)
    return train, test
