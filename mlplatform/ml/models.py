"""Candidate models: the families, a random search on card-grouped folds, calibration.

A :class:`ScoringModel` follows scikit-learn's estimator contract (``predict_proba(X)`` with
an ``(n, 2)`` result) over master-table feature columns; it holds the fitted estimator (a
scikit-learn pipeline or a LightGBM booster), the probability calibrator and the decision
threshold. :func:`train_candidate` tunes, fits and calibrates one family; every estimator fit
it does is timed, so a benchmark can set the platform's overhead against the bare fits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from mlplatform.ml.evaluation import LearningCurvePoint, expected_calibration_error

FAMILIES = ("logistic_regression", "random_forest", "lightgbm")
#: Share of train (whole cards) of the learning curve's smaller fits; the last point is train.
LEARNING_CURVE_SHARES = (0.2, 0.5)
#: Rows (whole cards) of validation, and of train for models other than LightGBM, that a
#: learning-curve point is scored on.
LEARNING_CURVE_SCORE_ROWS = 50_000


def available_threads() -> int:
    """Threads of a fit, a search and a batch prediction: ``OMP_NUM_THREADS`` when it is set
    (OpenMP's own setting, which LightGBM's default follows too), else the cores this process
    may run on. Set it to share the machine: LightGBM's OpenMP threads run 10-30x slower when
    other processes keep the cores busy (the test suite's two workers each set 1)."""
    if threads := os.environ.get("OMP_NUM_THREADS", "").strip():
        return int(threads)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


THREADS = available_threads()
#: Up to this many rows, a LightGBM booster scores a numpy matrix on one thread: for a
#: request of one transaction, pandas' frame and a second thread cost ten times the trees.
SMALL_BATCH = 64
#: Families whose fits use one core: their search runs THREADS fits at once.
ONE_CORE_FAMILIES = frozenset({"logistic_regression"})
Sampler = Callable[[np.random.Generator], Any]


def _as_float(column: pd.Series) -> pd.Series:
    """float64 values of a column (booleans 0/1; anything unparsable or missing NaN)."""
    if pd.api.types.is_float_dtype(column.dtype):
        return column.astype("float64", copy=False)
    return pd.to_numeric(column, errors="coerce").astype("float64")


def _number(value: Any) -> float:
    """One value as :meth:`FeatureSpec.matrix` reads it: None and NaN missing, booleans 0/1,
    numbers (decimals too) as float64, text parsed (unparsable: missing)."""
    if value is None:
        return np.nan
    if isinstance(value, str):
        return float(pd.to_numeric(value, errors="coerce"))
    return float(value)


@dataclass(frozen=True)
class FeatureSpec:
    """Model inputs: numeric columns and categorical columns with their train levels."""

    numeric: tuple[str, ...]
    categorical: Mapping[str, tuple[str, ...]]

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)

    def frame(self, data: pd.DataFrame) -> pd.DataFrame:
        """The model's input frame: numbers as float64 (booleans 0/1, missing NaN) and
        categories as pandas categoricals over the train levels (unseen levels: missing)."""
        self._require(data)
        columns = {name: _as_float(data[name]) for name in self.numeric}
        for name, levels in self.categorical.items():
            columns[name] = pd.Categorical(data[name], categories=list(levels))
        return pd.DataFrame(columns, index=data.index)

    def matrix(self, data: pd.DataFrame) -> np.ndarray:
        """The model's inputs as float64 ``(n, features)``: numbers as in :meth:`frame`,
        categories as their code among the train levels (unseen or missing: NaN), which is
        what LightGBM reads from :meth:`frame`'s categoricals."""
        self._require(data)
        matrix = np.empty((len(data), len(self.names)))
        for j, name in enumerate(self.numeric):
            values = data[name].to_numpy()  # not through pandas' astype: slow per column
            if values.dtype.kind not in "fiub":
                values = pd.to_numeric(values, errors="coerce")
            matrix[:, j] = values
        for j, (name, levels) in enumerate(self.categorical.items(), start=len(self.numeric)):
            codes = {level: float(i) for i, level in enumerate(levels)}
            matrix[:, j] = [codes.get(v, np.nan) if isinstance(v, str) else np.nan
                            for v in data[name]]  # fmt: skip
        return matrix

    def matrix_of_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """:meth:`matrix` of rows given as mappings, without a DataFrame (a request's few
        rows): the same values, converted as pandas converts a column of them."""
        missing = [name for name in self.names if rows and name not in rows[0]]
        if missing:
            raise KeyError(f"the model needs feature columns that are absent: {missing}")
        matrix = np.empty((len(rows), len(self.names)))
        for j, name in enumerate(self.numeric):
            matrix[:, j] = [_number(row[name]) for row in rows]
        for j, (name, levels) in enumerate(self.categorical.items(), start=len(self.numeric)):
            codes = {level: float(i) for i, level in enumerate(levels)}
            matrix[:, j] = [codes.get(v, np.nan) if isinstance(v, str) else np.nan
                            for v in (row[name] for row in rows)]  # fmt: skip
        return matrix

    def frame_of_matrix(self, matrix: np.ndarray) -> pd.DataFrame:
        """:meth:`frame` of the rows that :meth:`matrix` laid out as ``matrix``: numbers as
        they are, category codes back to categoricals over the train levels (NaN: missing)."""
        columns: dict[str, Any] = {name: matrix[:, j] for j, name in enumerate(self.numeric)}
        for j, (name, levels) in enumerate(self.categorical.items(), start=len(self.numeric)):
            codes = np.nan_to_num(matrix[:, j], nan=-1).astype(int)
            columns[name] = pd.Categorical.from_codes(codes, categories=list(levels))
        return pd.DataFrame(columns)

    def _require(self, data: pd.DataFrame) -> None:
        missing = [name for name in self.names if name not in data.columns]
        if missing:
            raise KeyError(f"the model needs feature columns that are absent: {missing}")

    def as_dict(self) -> dict[str, Any]:
        return {"numeric": list(self.numeric),
                "categorical": {k: list(v) for k, v in self.categorical.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            numeric=tuple(data["numeric"]),
            categorical={k: tuple(v) for k, v in data["categorical"].items()},
        )


def feature_spec(train: pd.DataFrame, features: Sequence[str]) -> FeatureSpec:
    """Text columns are categorical (levels as seen on ``train``); the rest numeric."""
    categorical = {
        name: tuple(sorted(train[name].dropna().astype(str).unique()))
        for name in features
        if pd.api.types.is_object_dtype(train[name]) or pd.api.types.is_string_dtype(train[name])
    }
    numeric = tuple(name for name in features if name not in categorical)
    return FeatureSpec(numeric=numeric, categorical=categorical)


@dataclass(frozen=True)
class Calibrator:
    """Maps a raw score to a probability: ``sigmoid`` (Platt, on the score's logit) or
    ``isotonic`` (piecewise linear through the fitted thresholds)."""

    method: str
    params: Mapping[str, Any]

    def transform(self, score: np.ndarray) -> np.ndarray:
        if self.method == "sigmoid":
            z = self.params["slope"] * _logit(score) + self.params["intercept"]
            return 1.0 / (1.0 + np.exp(-z))
        return np.interp(score, self.params["x"], self.params["y"])

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        return cls(method=data["method"], params=data["params"])


def fit_calibrator(method: str, score: np.ndarray, y: np.ndarray) -> Calibrator:
    """Fit a ``sigmoid`` or ``isotonic`` calibrator of ``score`` to the 0/1 ``y``."""
    if method == "sigmoid":
        platt = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(score)[:, None], y)
        params = {"slope": float(platt.coef_[0, 0]), "intercept": float(platt.intercept_[0])}
        return Calibrator("sigmoid", params)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, y)
    params = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    return Calibrator("isotonic", params)


def _logit(score: np.ndarray) -> np.ndarray:
    p = np.clip(score, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


@dataclass
class ScoringModel:
    """A calibrated binary classifier over master-table features (``predict_proba``)."""

    family: str
    spec: FeatureSpec
    estimator: Any
    calibrator: Calibrator
    threshold: float
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.spec.names

    def raw_score(self, data: pd.DataFrame) -> np.ndarray:
        """The estimator's uncalibrated score of the positive class, one per row."""
        if isinstance(self.estimator, lgb.Booster) and len(data) <= SMALL_BATCH:
            return self.estimator.predict(self.spec.matrix(data), num_threads=1)
        return estimator_score(self.estimator, self.spec.frame(data))

    def score_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Calibrated probability of the positive class of each of a few rows (mappings with
        the feature columns), as :meth:`predict_proba` of their DataFrame gives it: a
        LightGBM booster reads them as a matrix, with no DataFrame made."""
        if isinstance(self.estimator, lgb.Booster) and len(rows) <= SMALL_BATCH:
            raw = self.estimator.predict(self.spec.matrix_of_rows(rows), num_threads=1)
            return self.calibrator.transform(raw)
        return self.predict_proba(pd.DataFrame(list(rows)))[:, 1]

    def score_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated probability of the positive class, one per row of ``matrix`` (float64
        ``(n, features)`` as :meth:`FeatureSpec.matrix` lays them out): a LightGBM booster
        reads it as it is, other estimators get the model frame back."""
        if isinstance(self.estimator, lgb.Booster):
            raw = self.estimator.predict(matrix, num_threads=THREADS)
        else:
            raw = estimator_score(self.estimator, self.spec.frame_of_matrix(matrix))
        return self.calibrator.transform(raw)

    def predict_proba(self, data: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities, shape ``(n, 2)``: column 1 is the positive class."""
        p = self.calibrator.transform(self.raw_score(data))
        return np.column_stack([1.0 - p, p])

    def metadata(self) -> dict[str, Any]:
        """Everything but the estimator, JSON-able (stored beside the model in MLflow)."""
        return {
            "family": self.family,
            "spec": self.spec.as_dict(),
            "calibrator": self.calibrator.as_dict(),
            "threshold": self.threshold,
            "params": {k: _json_scalar(v) for k, v in self.params.items()},
        }


def _json_scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def estimator_score(estimator: Any, frame: pd.DataFrame) -> np.ndarray:
    """Positive-class score of a fitted pipeline or LightGBM booster on a model frame."""
    if isinstance(estimator, lgb.Booster):
        return estimator.predict(frame, num_threads=THREADS)
    return estimator.predict_proba(frame)[:, 1]


# --- the families -----------------------------------------------------------------------------

SEARCH_SPACES: dict[str, dict[str, Sampler]] = {
    "logistic_regression": {
        "C": lambda rng: float(10 ** rng.uniform(-3, 1)),
        "class_weight": lambda rng: [None, "balanced"][rng.integers(2)],
    },
    "random_forest": {
        "n_estimators": lambda rng: int(rng.choice([60, 100])),
        "max_depth": lambda rng: int(rng.choice([10, 14])),
        "min_samples_leaf": lambda rng: int(rng.choice([10, 30])),
        "max_features": lambda rng: ["sqrt", 0.2][rng.integers(2)],
        "max_samples": lambda rng: float(rng.choice([0.05, 0.1])),
        "class_weight": lambda rng: [None, "balanced_subsample"][rng.integers(2)],
    },
    "lightgbm": {
        "num_boost_round": lambda rng: int(rng.choice([150, 300])),
        "learning_rate": lambda rng: float(10 ** rng.uniform(-1.5, -0.8)),
        "num_leaves": lambda rng: int(rng.choice([15, 31, 63])),
        "min_child_samples": lambda rng: int(rng.choice([20, 50, 100])),
        "feature_fraction": lambda rng: float(rng.choice([0.6, 0.8, 1.0])),
        "lambda_l2": lambda rng: float(rng.choice([0.0, 1.0, 10.0])),
        "scale_pos_weight": lambda rng: float(rng.choice([1.0, 5.0, 20.0])),
    },
}


def fit_estimator(
    family: str, params: Mapping[str, Any], spec: FeatureSpec, frame: pd.DataFrame, y: np.ndarray
) -> Any:
    """Fit one estimator of ``family`` with ``params`` on a model frame (see FeatureSpec)."""
    if family == "lightgbm":
        lgb_params = {k: v for k, v in params.items() if k != "num_boost_round"}
        lgb_params |= {"objective": "binary", "verbose": -1, "num_threads": THREADS,
                       "bagging_fraction": 0.8, "bagging_freq": 1, "seed": 0}  # fmt: skip
        data = lgb.Dataset(frame, label=y, categorical_feature=list(spec.categorical) or "auto")
        # The training booster keeps every fit row's score (see _train_score).
        return lgb.train(
            lgb_params, data, num_boost_round=params["num_boost_round"], keep_training_booster=True
        )
    categories = [list(levels) for levels in spec.categorical.values()]
    if family == "logistic_regression":
        numeric = Pipeline(
            [("impute", SimpleImputer(add_indicator=True, keep_empty_features=True)),
             ("scale", StandardScaler())]
        )  # fmt: skip
        encoder = OneHotEncoder(categories=categories, handle_unknown="ignore")
        model = LogisticRegression(max_iter=300, tol=1e-3, **params)
    elif family == "random_forest":
        numeric = "passthrough"  # trees split on missing values themselves
        encoder = OrdinalEncoder(
            categories=categories, handle_unknown="use_encoded_value", unknown_value=-1,
            encoded_missing_value=-1,
        )  # fmt: skip
        model = RandomForestClassifier(n_jobs=THREADS, random_state=0, **params)
    else:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    steps = [("numeric", numeric, list(spec.numeric))]
    if spec.categorical:
        steps.append(("categorical", encoder, list(spec.categorical)))
    pipeline = Pipeline([("prepare", ColumnTransformer(steps)), ("model", model)])
    if family in ONE_CORE_FAMILIES:
        # lbfgs on a tall, narrow design runs faster on one BLAS thread than on OpenBLAS's
        # two (1.7x measured on the 2-core machine); the search runs such fits side by side.
        with threadpool_limits(limits=1, user_api="blas"):
            return pipeline.fit(frame, y)
    return pipeline.fit(frame, y)


def feature_importances(estimator: Any, spec: FeatureSpec) -> dict[str, float]:
    """Importance per input feature, summing to 1: LightGBM gain, forest impurity decrease,
    or the logistic regression's absolute standardised coefficients (one-hot columns summed)."""
    if isinstance(estimator, lgb.Booster):
        values = estimator.feature_importance("gain")
        raw = dict(zip(estimator.feature_name(), values, strict=True))
    else:
        prepare, model = estimator.named_steps["prepare"], estimator.named_steps["model"]
        weights = np.abs(model.coef_[0]) if hasattr(model, "coef_") else model.feature_importances_
        raw = dict.fromkeys(spec.names, 0.0)
        names = prepare.get_feature_names_out()
        for name, weight in zip(names, weights, strict=True):
            raw[_input_feature(name, spec)] += float(weight)
    total = sum(raw.values()) or 1.0
    return {name: float(value) / total for name, value in raw.items()}


def _input_feature(output_name: str, spec: FeatureSpec) -> str:
    """The input feature behind a ColumnTransformer output (``numeric__x``,
    ``missingindicator_x``, ``categorical__c_level``)."""
    bare = output_name.split("__", 1)[1]
    bare = bare.removeprefix("missingindicator_")
    if bare in spec.names:
        return bare
    return next(name for name in spec.categorical if bare.startswith(f"{name}_"))


# --- search, fit, calibrate --------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One random-search trial: parameters and mean validation-fold average precision."""

    params: Mapping[str, Any]
    score: float
    fold_scores: tuple[float, ...]


@dataclass(frozen=True)
class FitRecord:
    """One estimator fit the training did: what for, on how many rows, how long (s)."""

    purpose: str
    params: Mapping[str, Any]
    rows: int
    seconds: float


@dataclass(frozen=True)
class CandidateResult:
    """A trained candidate and what its training measured (validation only; no holdout)."""

    model: ScoringModel
    trials: tuple[Trial, ...]
    calibration_brier: Mapping[str, float]
    calibration_ece: Mapping[str, float]
    validation_proba: np.ndarray
    learning_curve: tuple[LearningCurvePoint, ...]
    importances: Mapping[str, float]
    fits: tuple[FitRecord, ...]

    @property
    def fit_seconds(self) -> float:
        return sum(f.seconds for f in self.fits)


@dataclass(frozen=True)
class TrainingPlan:
    """How to tune: trials, folds, search rows and the seed (from settings)."""

    iterations: int
    folds: int
    search_max_rows: int
    seed: int = 0


def sample_params(family: str, iterations: int, seed: int) -> list[dict[str, Any]]:
    """``iterations`` distinct parameter sets drawn from the family's search space."""
    rng = np.random.default_rng(seed)
    space = SEARCH_SPACES[family]
    drawn: list[dict[str, Any]] = []
    for _ in range(iterations * 20):  # duplicates are redrawn; the spaces are large enough
        params = {name: sample(rng) for name, sample in space.items()}
        if params not in drawn:
            drawn.append(params)
        if len(drawn) == iterations:
            break
    return drawn


def card_sample(cards: pd.Series, max_rows: int, seed: int) -> np.ndarray:
    """Row mask of whole cards, in a seeded random order, until ``max_rows`` rows."""
    if len(cards) <= max_rows:
        return np.ones(len(cards), dtype=bool)
    counts = cards.value_counts(sort=False)
    order = np.random.default_rng(seed).permutation(len(counts))
    cumulative = counts.iloc[order].cumsum()
    chosen = cumulative.index[cumulative.to_numpy() <= max_rows]
    return cards.isin(chosen).to_numpy()


def search_folds(
    cards: pd.Series, plan: TrainingPlan
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Rows the search uses (mask over train) and its folds over them, grouped by card."""
    mask = card_sample(cards, plan.search_max_rows, plan.seed)
    folds = list(GroupKFold(n_splits=plan.folds).split(np.zeros(mask.sum()),
                                                       groups=cards[mask].to_numpy()))  # fmt: skip
    return mask, folds


@dataclass(frozen=True)
class ModelInputs:
    """Train and validation as model frames with their targets and cards: built once per
    master table and shared by every family (the frames are read, never modified)."""

    spec: FeatureSpec
    x_train: pd.DataFrame
    y_train: np.ndarray
    train_cards: pd.Series
    x_val: pd.DataFrame
    y_val: np.ndarray
    val_cards: pd.Series


def model_inputs(
    train: pd.DataFrame, validation: pd.DataFrame, features: Sequence[str]
) -> ModelInputs:
    """Model inputs of master-table rows (``card_id``, ``target`` and the feature columns;
    no card on both sides); each split needs both target classes."""
    for name, split in (("train", train), ("validation", validation)):
        if split["target"].nunique() < 2:
            raise ValueError(f"the {name} split has one target class only: nothing to learn")
    spec = feature_spec(train, features)
    return ModelInputs(
        spec=spec,
        x_train=spec.frame(train),
        y_train=train["target"].to_numpy(dtype=int),
        train_cards=train["card_id"],
        x_val=spec.frame(validation),
        y_val=validation["target"].to_numpy(dtype=int),
        val_cards=validation["card_id"],
    )


def train_candidate(
    family: str,
    inputs: ModelInputs,
    plan: TrainingPlan,
    choose_threshold: Callable[[np.ndarray, np.ndarray], float],
) -> CandidateResult:
    """Tune ``family`` on card-grouped folds of train, refit on all of train, calibrate on
    validation and choose the threshold there; ``choose_threshold(y, proba)`` picks the
    decision threshold from validation probabilities."""
    spec = inputs.spec
    x_train, y_train, x_val, y_val = inputs.x_train, inputs.y_train, inputs.x_val, inputs.y_val
    fits: list[FitRecord] = []

    def fit(
        purpose: str, params: Mapping[str, Any], x: pd.DataFrame, y: np.ndarray
    ) -> tuple[Any, FitRecord]:
        start = time.perf_counter()
        estimator = fit_estimator(family, params, spec, x, y)
        return estimator, FitRecord(purpose, dict(params), len(x), time.perf_counter() - start)

    def timed_fit(purpose: str, params: Mapping[str, Any], x: pd.DataFrame, y: np.ndarray) -> Any:
        estimator, record = fit(purpose, params, x, y)
        fits.append(record)
        return estimator

    def search_fit(
        job: tuple[Mapping[str, Any], tuple[np.ndarray, np.ndarray]],
    ) -> tuple[FitRecord, float]:
        params, (fit_rows, score_rows) = job
        estimator, record = fit("search", params, x_search.iloc[fit_rows], y_search[fit_rows])
        score = estimator_score(estimator, x_search.iloc[score_rows])
        return record, _average_precision(y_search[score_rows], score)

    cards = inputs.train_cards
    mask, folds = search_folds(cards, plan)
    x_search, y_search = x_train[mask], y_train[mask]
    candidates = sample_params(family, plan.iterations, plan.seed)
    jobs = [(params, fold) for params in candidates for fold in folds]
    if family in ONE_CORE_FAMILIES:  # a fit per core (nested limits restore to one thread)
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(THREADS) as pool:
            outcomes = list(pool.map(search_fit, jobs))
    else:  # the fits use every core themselves
        outcomes = [search_fit(job) for job in jobs]
    fits += [record for record, _ in outcomes]  # in job order, as if run one after another
    trials = []
    for i, params in enumerate(candidates):
        scores = [score for _, score in outcomes[i * len(folds) : (i + 1) * len(folds)]]
        valid = [s for s in scores if not np.isnan(s)]
        trials.append(Trial(params, float(np.mean(valid)) if valid else np.nan, tuple(scores)))
    best = max(trials, key=lambda t: -np.inf if np.isnan(t.score) else t.score)

    estimator = timed_fit("final", best.params, x_train, y_train)
    val_score = estimator_score(estimator, x_val)
    calibrator, brier, ece, val_proba = _calibrate(val_score, y_val, inputs.val_cards)
    model = ScoringModel(
        family=family,
        spec=spec,
        estimator=estimator,
        calibrator=calibrator,
        threshold=choose_threshold(y_val, val_proba),
        params=best.params,
    )
    # Learning-curve points are scored on a whole-card sample of validation (train: _train_score).
    on_val = card_sample(inputs.val_cards, LEARNING_CURVE_SCORE_ROWS, plan.seed)
    x_curve, y_curve = x_val[on_val], y_val[on_val]
    curve = []
    for share in LEARNING_CURVE_SHARES:
        subset = card_sample(cards, round(share * len(x_train)), plan.seed + 1)
        small = timed_fit(f"learning_curve_{share}", best.params, x_train[subset], y_train[subset])
        curve.append(
            _curve_point(small, cards[subset], x_train[subset], y_train[subset], x_curve, y_curve)
        )
    curve.append(
        _curve_point(estimator, cards, x_train, y_train, x_curve, y_curve, val_score[on_val])
    )
    return CandidateResult(
        model=model,
        trials=tuple(trials),
        calibration_brier=brier,
        calibration_ece=ece,
        validation_proba=val_proba,
        learning_curve=tuple(curve),
        importances=feature_importances(estimator, spec),
        fits=tuple(fits),
    )


def _average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision, NaN when ``y`` has no positive (a fold too small to judge)."""
    return float(average_precision_score(y, score)) if y.any() else np.nan


def _curve_point(
    estimator: Any,
    cards: pd.Series,
    x_fit: pd.DataFrame,
    y_fit: np.ndarray,
    x_val: pd.DataFrame,
    y_val: np.ndarray,
    val_score: np.ndarray | None = None,
) -> LearningCurvePoint:
    if val_score is None:
        val_score = estimator_score(estimator, x_val)
    return LearningCurvePoint(
        train_rows=len(x_fit),
        train_score=_train_score(estimator, cards, x_fit, y_fit),
        validation_score=_average_precision(y_val, val_score),
    )


def _train_score(estimator: Any, cards: pd.Series, x_fit: pd.DataFrame, y_fit: np.ndarray) -> float:
    """Average precision on the rows ``estimator`` was fit on: a LightGBM training booster
    holds every fit row's score already; other models score a whole-card sample."""
    if isinstance(estimator, lgb.Booster):
        evaluated = estimator.eval_train(_lightgbm_average_precision)
        return next(float(r[2]) for r in evaluated if r[1] == "average_precision")
    scored = card_sample(cards, LEARNING_CURVE_SCORE_ROWS, seed=0)
    return _average_precision(y_fit[scored], estimator_score(estimator, x_fit[scored]))


def _lightgbm_average_precision(score: np.ndarray, data: lgb.Dataset) -> tuple[str, float, bool]:
    return "average_precision", _average_precision(data.get_label().astype(int), score), True


def _calibrate(
    score: np.ndarray, y: np.ndarray, cards: pd.Series
) -> tuple[Calibrator, dict[str, float], dict[str, float], np.ndarray]:
    """Choose sigmoid or isotonic by cross-fitted Brier score on validation (two halves by
    card, each calibrated on the other), then fit the winner on all of validation.

    Returns the calibrator, Brier and ECE per method, and the winner's cross-fitted
    probabilities (honest validation probabilities for the threshold choice)."""
    half = (pd.util.hash_pandas_object(cards, index=False).to_numpy() % 2).astype(bool)
    brier, ece, cross_fitted = {}, {}, {}
    for method in ("sigmoid", "isotonic"):
        proba = np.empty(len(score))
        for side in (half, ~half):
            if y[~side].min() == y[~side].max():  # one class on the fitting half: no information
                proba[side] = y[~side].mean()
            else:
                proba[side] = fit_calibrator(method, score[~side], y[~side]).transform(score[side])
        brier[method] = float(brier_score_loss(y, proba))
        ece[method] = float(expected_calibration_error(y, proba))
        cross_fitted[method] = proba
    method = min(brier, key=brier.__getitem__)
    return fit_calibrator(method, score, y), brier, ece, cross_fitted[method]
