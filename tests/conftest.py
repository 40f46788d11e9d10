"""Test-session wiring: real data from a configurable directory, a throw-away project home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # Decoded datasets are cached next to the checkout (ignored by git) unless told otherwise, so a
    # developer decodes Omniglot once and a clean CI clone decodes it once per run.
    os.environ.setdefault("METAAUTO_CACHE_DIR", str(REPO / ".metaauto-cache"))


@pytest.fixture(autouse=True, scope="session")
def _project_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("metaauto-home")
    os.environ["METAAUTO_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real datasets; tests never download, so a missing directory is an error, not a skip."""
    value = os.environ.get("METAAUTO_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.fail(
            "METAAUTO_DATA_DIR must point at the shared datasets (omniglot/, movielens/, heart-disease/); "
            f"got {value!r}. `make test` sets it to ../shared/data."
        )
    return Path(value)


@pytest.fixture(scope="module")
def single_thread():
    """For modules of tiny models: intra-op threads only add synchronisation, badly so on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
