"""Save and load learners without pickle: weights in safetensors, everything else in JSON.

A saved learner is a directory with ``model.safetensors`` (the learner's whole state: the model plus
learner-owned parameters such as Meta-SGD's rates or the relation module) and ``learner.json`` (learner
name, hparams, the backbone spec, and caller-supplied ``extra``). Networks built by
:func:`metaauto.backbones.make_backbone` rebuild from their spec; any other module must be supplied to
:func:`load_learner` by the caller, since arbitrary code is exactly what we refuse to unpickle.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from metaauto.backbones import make_backbone
from metaauto.errors import LearnerError
from metaauto.learners.base import Learner
from metaauto.learners.catalog import make_learner

WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "learner.json"
FORMAT_VERSION = 1


def save_learner(learner: Learner, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``learner`` to ``directory`` (created if needed); both files appear only once complete."""
    directory = Path(directory)
    info = {
        "format_version": FORMAT_VERSION,
        "learner": learner.name,
        "hparams": learner.hparams(),
        "backbone": getattr(learner.model, "spec", None),
        "model_class": f"{type(learner.model).__module__}.{type(learner.model).__qualname__}",
        "extra": extra or {},
    }
    try:
        text = json.dumps(info, indent=2, sort_keys=True)
    except TypeError as err:
        raise LearnerError(f"cannot save learner {learner.name!r}: extra must be JSON-serialisable ({err})") from None
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        weights_tmp = Path(tempfile.mkstemp(dir=directory, prefix=".model-", suffix=".safetensors")[1])
        staged.append((weights_tmp, directory / WEIGHTS_FILE))
        save_model(learner, str(weights_tmp))
        info_tmp = Path(tempfile.mkstemp(dir=directory, prefix=".learner-", suffix=".json")[1])
        staged.append((info_tmp, directory / INFO_FILE))
        info_tmp.write_text(text + "\n")
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    return directory


def read_learner_info(directory: str | os.PathLike) -> dict[str, Any]:
    """The contents of a saved learner's ``learner.json`` (name, hparams, backbone spec, extra)."""
    path = Path(directory) / INFO_FILE
    if not path.is_file():
        raise LearnerError(f"{path} does not exist; is {directory} a directory written by save_learner?")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LearnerError(f"{path} is not valid JSON: {err}") from None
    missing = [key for key in ("learner", "hparams", "backbone") if key not in info]
    if missing:
        raise LearnerError(f"{path} lacks {', '.join(missing)}; it was not written by save_learner")
    return info


def load_learner(
    directory: str | os.PathLike, model: nn.Module | None = None, map_location: str | torch.device = "cpu"
) -> Learner:
    """Rebuild a saved learner and load its weights (strictly: every tensor must match).

    ``model`` supplies the network when it was not built by ``make_backbone`` (the JSON then holds no
    spec); it is also accepted in place of a spec, e.g. to load into an existing module.
    """
    directory = Path(directory)
    info = read_learner_info(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise LearnerError(f"{weights} does not exist; the saved learner in {directory} is incomplete")
    if model is None:
        if info["backbone"] is None:
            raise LearnerError(
                f"the learner in {directory} wraps a {info.get('model_class', 'custom')} that was not built by "
                "make_backbone, so its architecture cannot be rebuilt from learner.json; pass the module "
                "as load_learner(directory, model=...)"
            )
        model = make_backbone(**info["backbone"])
    learner = make_learner(info["learner"], model, **info["hparams"])
    learner.to(map_location)
    missing, unexpected = load_model(learner, str(weights), strict=False, device=str(map_location))
    if missing or unexpected:
        raise LearnerError(
            f"{weights} does not match the rebuilt {info['learner']} learner: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return learner
