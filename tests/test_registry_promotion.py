"""Registration, evidence-based promotion of the champion alias, rollback, and racing promotions."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import _mlflow_support as support
from metaauto.tracking.promotion import CHAMPION, PREVIOUS, TAG, RegistryError, paired_test, promote, register, registry_lock, rollback


@pytest.fixture(scope="module")
def client():
    from metaauto.tracking import get_client

    return get_client(support.store_uri())


@pytest.fixture(scope="module")
def models(data_dir: Path):
    return support.strong(str(data_dir)), support.weak(str(data_dir))


def _alias(client, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def test_paired_test_direction_and_margin() -> None:
    better = [0.8, 0.9, 0.7, 1.0, 0.85, 0.9, 0.75, 0.95]
    worse = [v - 0.2 for v in better[:4]] + [v - 0.1 for v in better[4:]]
    assert paired_test(better, worse, higher_is_better=True, margin=0.0, alpha=0.05, test="wilcoxon")[0]
    assert not paired_test(worse, better, higher_is_better=True, margin=0.0, alpha=0.05, test="ttest")[0]
    # a margin larger than the improvement blocks promotion; for MSE lower is better
    assert not paired_test(better, worse, higher_is_better=True, margin=0.5, alpha=0.05, test="ttest")[0]
    assert paired_test(worse, better, higher_is_better=False, margin=0.0, alpha=0.05, test="ttest")[0]
    assert paired_test(better, better, higher_is_better=True, margin=0.0, alpha=0.05, test="wilcoxon")[2] == 1.0


def test_promotion_refuses_worse_accepts_better_and_rolls_back(client, models) -> None:
    strong, weak = models
    name = "omniglot-5w1s-promotion"
    v1, v2, v3 = (str(register(name, m.model.model_id, client=client).version) for m in (weak, strong, weak))
    first = promote(name, v1, client=client)
    assert first.promoted and _alias(client, name, CHAMPION) == v1

    better = promote(name, v2, client=client)
    assert better.promoted and better.champion_before == v1 and better.p_value < 0.05
    assert better.mean_difference > 0.1 and better.n_tasks == 40 and better.test == "wilcoxon"
    assert (_alias(client, name, CHAMPION), _alias(client, name, PREVIOUS)) == (v2, v1)

    worse = promote(name, v3, client=client, test="ttest")
    assert not worse.promoted and worse.mean_difference < 0
    assert (_alias(client, name, CHAMPION), _alias(client, name, PREVIOUS)) == (v2, v1)

    # every decision is explained on the version page
    refused = client.get_model_version(name, v3)
    assert refused.tags[TAG + "decision"] == "rejected"
    assert refused.tags[TAG + "compared_to"] == v2
    assert refused.tags[TAG + "test"] == "ttest" and float(refused.tags[TAG + "p_value"]) > 0.05
    assert "NOT promoted" in refused.description and "40 paired meta-test tasks" in refused.description
    accepted = client.get_model_version(name, v2)
    assert accepted.tags[TAG + "decision"] == "promoted" and accepted.tags[TAG + "replaced"] == v1
    assert "PROMOTED to champion" in accepted.description

    back = rollback(name, client=client)
    assert (back.demoted, back.champion, back.previous) == (v2, v1, None)
    assert _alias(client, name, CHAMPION) == v1 and _alias(client, name, PREVIOUS) is None
    assert "ROLLED BACK" in client.get_model_version(name, v2).description
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(name, client=client)


def test_racing_promotions_leave_consistent_aliases(client, models) -> None:
    strong, weak = models
    name = "omniglot-5w1s-race"
    base = register(name, weak.model.model_id, client=client)
    promote(name, base.version, client=client)
    # two equally good candidates race: exactly one may win, and the other must have been compared
    # with the winner (not with the old champion both saw before the race)
    candidates = [str(register(name, strong.model.model_id, client=client).version) for _ in range(2)]
    barrier = threading.Barrier(2)
    decisions, errors = {}, []

    def run(version: str) -> None:
        try:
            barrier.wait()
            decisions[version] = promote(name, version, client=client)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(v,)) for v in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    winners = [v for v, d in decisions.items() if d.promoted]
    assert len(winners) == 1
    (winner,) = winners
    (loser,) = [v for v in candidates if v != winner]
    assert decisions[loser].champion_before == winner
    assert (_alias(client, name, CHAMPION), _alias(client, name, PREVIOUS)) == (winner, str(base.version))
    assert name + ".lock" not in {m.name for m in client.search_registered_models()}


def test_lock_excludes_a_second_holder(client) -> None:
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with registry_lock("lock-test", client):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(10)
    try:
        with pytest.raises(RegistryError, match="could not lock"):
            with registry_lock("lock-test", client, timeout=0.5):
                pass
    finally:
        release.set()
        holder.join()
    with registry_lock("lock-test", client, timeout=5):
        pass
