"""GlobalView versioning and the prober's fall/rise bookkeeping (no network)."""
import pytest

from gslb.globalview import GlobalView, Prober


def test_changes_bump_version_and_snapshot_is_frozen() -> None:
    view = GlobalView(["a", "b"])
    snap = view.snapshot()
    v0 = view.version
    assert view.set_health("a", False, now=1.0)
    assert not view.set_health("a", False, now=2.0)  # no change, no new version
    assert view.version == v0 + 1
    view.set_load("b", 12.5, now=3.0)
    assert view.version == v0 + 2
    assert snap["a"].healthy and not view.snapshot()["a"].healthy
    with pytest.raises(TypeError):
        view.snapshot()["a"] = None  # type: ignore[index]


def test_bad_inputs_rejected() -> None:
    view = GlobalView(["a"])
    with pytest.raises(KeyError):
        view.set_health("zz", True)
    with pytest.raises(ValueError):
        view.set_load("a", float("nan"))
    with pytest.raises(ValueError):
        view.set_load("a", -1)


def test_prober_needs_fall_failures_and_rise_successes() -> None:
    view = GlobalView(["a"])
    pr = Prober(view, {"a": ("127.0.0.1", 9)}, fall=2, rise=2)
    pr.observe("a", False, 0.0)
    assert view.snapshot()["a"].healthy
    pr.observe("a", False, 0.5)
    assert not view.snapshot()["a"].healthy
    pr.observe("a", True, 1.0)
    assert not view.snapshot()["a"].healthy
    pr.observe("a", True, 1.5)
    assert view.snapshot()["a"].healthy


def test_prober_rejects_unknown_dc() -> None:
    with pytest.raises(KeyError):
        Prober(GlobalView(["a"]), {"b": ("127.0.0.1", 9)})


def test_full_states_follow_every_load_change_and_their_transitions_are_kept() -> None:
    from gslb.config import example_config
    from gslb.policy import update_full
    cfg = example_config(hysteresis=0.2)
    view = GlobalView(d.name for d in cfg.dcs)
    view.track_full(lambda snap, before: update_full(cfg, snap, before))
    for load in (500, 1200, 900, 700, 1100):       # full, held (in the band), out, full
        view.set_load("dc-east", load, by_service={"search": load / 2})
    assert [(svc, dc, full) for _, svc, dc, full in view.transitions()] == [
        ("www", "dc-east", True), ("www", "dc-east", False), ("www", "dc-east", True)]
    assert view.full() == {("www", "dc-east")}
    assert view.snapshot()["dc-east"].by_service == (("search", 550.0),)
    view.set_health("dc-east", False)              # health keeps the class loads
    assert view.snapshot()["dc-east"].by_service == (("search", 550.0),)
