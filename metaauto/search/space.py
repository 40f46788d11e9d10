"""The conditional, define-by-run search space over learners and their hyperparameters.

A trial first draws ``algorithm`` among the allowed learners, then only that learner's own parameters,
each under a name that says whose it is (``maml.inner_lr``, ``protonet.distance``; Optuna keeps one
distribution per name, so two learners never share a parameter by accident), then the shared ones
(``meta_lr``, ``meta_batch_size``, ``backbone.width``).

Ranges and their sources (the published values sit inside every range, so the enqueued defaults are
points of the space):

=========================  =====================  ===================================================
parameter                  range                  why
=========================  =====================  ===================================================
``<gradient>.inner_lr``    1e-3 .. 1.0, log       Finn et al. 2017 use 0.01 (sinusoid) and 0.4
                                                  (Omniglot): two decades apart, so log scale.
``<gradient>.inner_steps`` 1 .. 5 (reptile 1..10) MAML: 1 (5-way) to 5 (20-way) steps; Reptile
                                                  (Nichol et al. 2018): 5 to 10 inner iterations.
``maml.first_order``       False, True            Finn et al. 2017, sec. 5.2: first-order MAML
                                                  "performs nearly as well" at a third of the cost.
``metasgd.init_lr``        1e-3 .. 0.5, log       Li et al. 2017 draw per-parameter rates uniformly
                                                  in [0.005, 0.1]: the parameter is the upper bound,
                                                  the lower bound is a twentieth of it (regression:
                                                  every rate starts at MAML's 0.01, the parameter).
``protonet.distance``      euclidean, cosine      Snell et al. 2017, sec. 2.7: squared Euclidean
                                                  beats cosine on Omniglot and miniImageNet.
``relationnet.hidden``     4 .. 64, log           Sung et al. 2018: 8 units on Omniglot.
``relationnet.loss``       mse, cross_entropy     Sung et al. 2018 regress scores with MSE; softmax
                                                  cross-entropy over the same logits trains faster
                                                  here (0.54 vs 0.37 after 100 Omniglot steps).
``meta_lr``                1e-4 .. 1e-2, log      Adam at 1e-3 in MAML, ProtoNet and RelationNet.
``meta_batch_size``        1 .. 32, log           32 tasks (MAML, Omniglot), 25 (MAML, sinusoid),
                                                  5 (Reptile), 1 episode (metric learners).
``backbone.width``         conv4 16 .. 128, log   64 channels (Vinyals et al. 2016); 40 hidden units
                           mlp 10 .. 160, log     (Finn et al. 2017, sinusoid).
=========================  =====================  ===================================================

The user narrows or fixes any parameter (:func:`parse_overrides`, :func:`load_overrides`): a scalar
fixes it, ``[a, b, ...]`` restricts it to those choices, ``{"low": a, "high": b}`` (CLI ``a:b``)
narrows its range. A fixed parameter is still a (single-valued) Optuna parameter, so it shows up in the
trial's parameters and in the leaderboard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from metaauto.errors import MetaautoError
from metaauto.learners import LEARNERS, available_learners, learner_defaults

ALGORITHM = "algorithm"

#: ratio of Meta-SGD's initial-rate bounds in Li et al. 2017 ([0.005, 0.1])
METASGD_LOW_RATIO = 20.0


class SearchError(MetaautoError, ValueError):
    """A search space, override, storage or study that cannot be used as given."""


@dataclass(frozen=True)
class Param:
    """One Optuna parameter: a float or int range (optionally log-scaled) or a set of choices."""

    name: str
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1 if self.kind == "categorical" else self.low == self.high

    def clip(self, value: Any) -> Any:
        """``value`` if it lies in the parameter's (possibly narrowed) range, else the nearest point of it."""
        if self.kind == "categorical":
            return value if value in self.choices else self.choices[0]
        value = min(max(value, self.low), self.high)
        return int(round(value)) if self.kind == "int" else float(value)

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        return f"[{self.low:g}, {self.high:g}]{' log' if self.log else ''}"

    def narrowed(self, spec: Any) -> "Param":
        """This parameter fixed to a scalar, restricted to a list of choices, or narrowed to ``{low, high}``."""
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"low", "high", "log"}
            if unknown or not {"low", "high"} <= set(spec):
                raise SearchError(f"range for {self.name!r} must be {{low: ..., high: ...}}, got {dict(spec)}")
            if self.kind == "categorical":
                raise SearchError(f"{self.name!r} is categorical {self.describe()}; give a value or a list, not a range")
            low, high = self._number(spec["low"]), self._number(spec["high"])
            log = bool(spec.get("log", self.log))
            if low > high:
                raise SearchError(f"range for {self.name!r} has low {low} > high {high}")
            if log and low <= 0:
                raise SearchError(f"{self.name!r} is searched on a log scale, so its range must be positive, got low {low}")
            return replace(self, low=low, high=high, log=log)
        if isinstance(spec, (list, tuple)):
            if not spec:
                raise SearchError(f"{self.name!r} needs at least one choice")
            values = tuple(self._value(v) for v in spec)
            return replace(self, kind="categorical", choices=values, low=None, high=None, log=False)
        value = self._value(spec)
        return replace(self, kind="categorical", choices=(value,), low=None, high=None, log=False)

    def _number(self, value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SearchError(f"{self.name!r} takes numbers, got {value!r}")
        if self.kind == "int":
            if int(value) != value:
                raise SearchError(f"{self.name!r} takes integers, got {value!r}")
            return int(value)
        return float(value)

    def _value(self, value: Any) -> Any:
        if self.kind == "categorical":
            if value not in self.choices:
                raise SearchError(f"{self.name!r} must be one of {self.describe()}, got {value!r}")
            return value
        number = self._number(value)
        if self.log and number <= 0:
            raise SearchError(f"{self.name!r} must be positive, got {value!r}")
        return number


def _float(name: str, low: float, high: float, log: bool = True) -> Param:
    return Param(name, "float", low, high, log)


def _int(name: str, low: int, high: int, log: bool = False) -> Param:
    return Param(name, "int", low, high, log)


def _algorithm_params(algorithm: str) -> list[Param]:
    """The learner's own parameters, named ``<algorithm>.<option>`` (see the table in the module docstring)."""
    p = f"{algorithm}."
    if algorithm in ("maml", "anil"):
        return [_float(p + "inner_lr", 1e-3, 1.0), _int(p + "inner_steps", 1, 5),
                Param(p + "first_order", "categorical", choices=(False, True))]
    if algorithm == "fomaml":
        return [_float(p + "inner_lr", 1e-3, 1.0), _int(p + "inner_steps", 1, 5)]
    if algorithm == "reptile":
        return [_float(p + "inner_lr", 1e-3, 1.0), _int(p + "inner_steps", 1, 10)]
    if algorithm == "metasgd":
        return [_float(p + "init_lr", 1e-3, 0.5), _int(p + "inner_steps", 1, 5)]
    if algorithm == "protonet":
        return [Param(p + "distance", "categorical", choices=("euclidean", "cosine"))]
    if algorithm == "relationnet":
        return [_int(p + "hidden", 4, 64, log=True), Param(p + "loss", "categorical", choices=("mse", "cross_entropy"))]
    return []  # matchingnet: nothing to tune besides the shared parameters


def _shared_params(backbone: str) -> list[Param]:
    width = _int("backbone.width", 16, 128, log=True) if backbone == "conv4" else _int("backbone.width", 10, 160, log=True)
    return [_float("meta_lr", 1e-4, 1e-2), _int("meta_batch_size", 1, 32, log=True), width]


def published_defaults(algorithm: str, task_type: str, backbone: str) -> dict[str, Any]:
    """The algorithm's published configuration as values of the space's parameters (unnarrowed)."""
    hp = learner_defaults(algorithm, task_type)
    p = f"{algorithm}."
    values: dict[str, Any] = {}
    if "inner_lr" in hp and algorithm != "metasgd":
        values[p + "inner_lr"] = float(hp["inner_lr"])
    if algorithm == "metasgd":
        rate = hp["inner_lr"]
        values[p + "init_lr"] = float(rate[1] if isinstance(rate, (list, tuple)) else rate)
    if "inner_steps" in hp:
        values[p + "inner_steps"] = int(hp["inner_steps"])
    if algorithm in ("maml", "anil"):
        values[p + "first_order"] = bool(hp.get("first_order", False))
    if algorithm == "protonet":
        values[p + "distance"] = hp["distance"]
    if algorithm == "relationnet":
        values[p + "hidden"] = int(hp["hidden"])
        values[p + "loss"] = hp.get("loss", "mse")
    family = LEARNERS[algorithm].family
    if family == "metric":
        batch = 1  # one episode per update (Snell et al. 2017, Vinyals et al. 2016, Sung et al. 2018)
    elif algorithm == "reptile":
        batch = 5  # Nichol et al. 2018, Omniglot
    else:
        batch = 25 if task_type == "regression" else 32  # Finn et al. 2017, sec. 5.1 and 5.2
    values["meta_lr"] = 1e-3
    values["meta_batch_size"] = batch
    values["backbone.width"] = 64 if backbone == "conv4" else 40
    return values


@dataclass(frozen=True)
class Candidate:
    """One point of the space, ready to build: a learner, its keyword options and the shared settings."""

    algorithm: str
    hparams: dict[str, Any]
    meta_lr: float
    meta_batch_size: int
    width: int


class SearchSpace:
    """The space for one collection's task type and backbone, after the user's overrides.

    ``algorithms`` defaults to every learner that solves ``task_type`` tasks. ``overrides`` maps
    parameter names (``algorithm`` included) to a fixed value, a list of choices or a ``{low, high}``
    range; names of learners outside ``algorithms`` are an error, so a typo never goes unnoticed.
    """

    def __init__(
        self,
        task_type: str,
        backbone: str,
        algorithms: list[str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        allowed = available_learners(task_type)
        algorithms = list(algorithms) if algorithms else allowed
        unknown = [a for a in algorithms if a not in LEARNERS]
        if unknown:
            raise SearchError(f"unknown algorithm(s) {', '.join(unknown)}; known: {', '.join(LEARNERS)}")
        unfit = [a for a in algorithms if a not in allowed]
        if unfit:
            raise SearchError(f"algorithm(s) {', '.join(unfit)} cannot solve {task_type} tasks; use {', '.join(allowed)}")
        self.task_type = task_type
        self.backbone = backbone
        overrides = dict(overrides or {})
        root = Param(ALGORITHM, "categorical", choices=tuple(dict.fromkeys(algorithms)))
        if ALGORITHM in overrides:
            root = root.narrowed(overrides.pop(ALGORITHM))
        self.algorithm = root
        self.params: dict[str, Param] = {}
        for param in [q for a in self.algorithms for q in _algorithm_params(a)] + _shared_params(backbone):
            self.params[param.name] = param.narrowed(overrides.pop(param.name)) if param.name in overrides else param
        if overrides:
            known = ", ".join([ALGORITHM, *self.params])
            raise SearchError(f"no searched parameter named {', '.join(sorted(overrides))}; the space has: {known}")

    @property
    def algorithms(self) -> list[str]:
        return list(self.algorithm.choices)

    def own_params(self, algorithm: str) -> list[Param]:
        return [self.params[q.name] for q in _algorithm_params(algorithm)]

    def shared_params(self) -> list[Param]:
        return [self.params[q.name] for q in _shared_params(self.backbone)]

    def suggest(self, trial: Any) -> Candidate:
        """Draw a point define-by-run: the algorithm, then its own parameters, then the shared ones."""
        algorithm = self.algorithm.suggest(trial)
        values = {q.name: q.suggest(trial) for q in self.own_params(algorithm) + self.shared_params()}
        return self.candidate({ALGORITHM: algorithm, **values})

    def defaults(self, algorithm: str) -> dict[str, Any]:
        """The published configuration of ``algorithm`` inside this (possibly narrowed) space."""
        published = published_defaults(algorithm, self.task_type, self.backbone)
        values = {ALGORITHM: algorithm}
        for param in self.own_params(algorithm) + self.shared_params():
            values[param.name] = param.clip(published[param.name])
        return values

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        """The buildable configuration behind a trial's ``params``."""
        algorithm = params[ALGORITHM]
        hparams = learner_defaults(algorithm, self.task_type)
        prefix = f"{algorithm}."
        for name, value in params.items():
            if not name.startswith(prefix):
                continue
            option = name[len(prefix):]
            if option == "init_lr":
                # same form as the published default: a [low, high] draw (Omniglot) or one rate (regression)
                ranged = isinstance(hparams["inner_lr"], (list, tuple))
                hparams["inner_lr"] = [float(value) / METASGD_LOW_RATIO, float(value)] if ranged else float(value)
            else:
                hparams[option] = value
        if "eval_inner_steps" in hparams and hparams.get("eval_inner_steps") is not None:
            # never evaluate with fewer steps than the learner was meta-trained to take
            hparams["eval_inner_steps"] = max(int(hparams["eval_inner_steps"]), int(hparams["inner_steps"]))
        return Candidate(
            algorithm=algorithm, hparams=hparams, meta_lr=float(params["meta_lr"]),
            meta_batch_size=int(params["meta_batch_size"]), width=int(params["backbone.width"]),
        )

    def describe(self) -> dict[str, str]:
        return {ALGORITHM: self.algorithm.describe(), **{n: q.describe() for n, q in self.params.items()}}


# ------------------------------------------------------------------------------------- overrides


def _parse_scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text.strip()


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """CLI ``--set`` values: ``maml.inner_lr=0.1`` fixes, ``maml.inner_lr=0.01:0.5`` narrows,
    ``protonet.distance=euclidean,cosine`` (or ``algorithm=maml,reptile``) restricts the choices."""
    overrides: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            raise SearchError(f"--set {pair!r} is not NAME=VALUE, NAME=LOW:HIGH or NAME=A,B,...")
        if ":" in text:
            low, _, high = text.partition(":")
            overrides[name] = {"low": _parse_scalar(low), "high": _parse_scalar(high)}
        elif "," in text:
            overrides[name] = [_parse_scalar(v) for v in text.split(",")]
        else:
            overrides[name] = _parse_scalar(text)
    return overrides


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        is_range = isinstance(value, Mapping) and set(value) <= {"low", "high", "log"}
        if isinstance(value, Mapping) and not is_range:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_overrides(path: str | Path) -> dict[str, Any]:
    """Overrides from a YAML or JSON file: ``{maml: {inner_lr: 0.1}, meta_lr: {low: 1e-4, high: 1e-3}}``
    (nested or dotted names; lists restrict choices, ``{low, high}`` narrows, scalars fix)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SearchError(f"cannot read search config {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SearchError(f"search config {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SearchError(f"search config {path} must hold a mapping of parameter names, got {type(data).__name__}")
    return _flatten(data)
