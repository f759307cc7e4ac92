"""A run without a finish record shows as running only while its device may still finish it (an
imported run, or one of a device gone offline, ended without one); a device that sent no status is not
live; a max-context search that found no limit is a lower bound. On both backends."""

from __future__ import annotations

from ctxscope.collector.readmodel import views


def _states(view: dict, device: str) -> dict[str, str]:
    return {r["run_id"]: r["state"] for r in view["runs"] if r["device"] == device}


def test_a_run_of_a_device_that_never_sent_a_status_is_unfinished(store, pg_store, simfleet, feed_store):
    ref = simfleet.SimDevice("h200-reference")  # records imported from files: no status, no finish
    for target in (store, pg_store):
        feed_store(
            target, [ref.run_started("r1", 30), ref.progress("r1", 15, 30), ref.telemetry(179.0, 60.0)]
        )
        fleet = views.fleet(target)
        assert fleet["running"] == []
        assert [(r["run_id"], r["state"], r["done"]) for r in fleet["unfinished"]] == [
            ("r1", "unfinished", 15)
        ]
        (summary,) = fleet["devices"]
        assert (summary["state"], summary["online"], summary["live"]) == (None, False, False)
        assert summary["telemetry"]["power_w"] == 179.0  # the last value recorded, marked not live
        assert _states(views.device_live(target, "h200-reference"), "h200-reference") == {"r1": "unfinished"}


def test_a_cut_run_stops_running_once_its_device_goes_offline_and_stays_over_when_it_is_back(
    store, pg_store, simfleet, feed_store
):
    for target in (store, pg_store):
        dev = simfleet.SimDevice("orin-1")
        feed_store(
            target, [dev.status("busy", run_id="r1"), dev.run_started("r1", 4), dev.progress("r1", 2, 4)]
        )
        assert [r["run_id"] for r in views.fleet(target)["running"]] == ["r1"]
        assert views.fleet(target)["devices"][0]["live"]
        feed_store(target, [dev.status("offline")])  # the agent died: its last will
        fleet = views.fleet(target)
        assert fleet["running"] == [] and [r["run_id"] for r in fleet["unfinished"]] == ["r1"]
        dev.birth += 1  # it comes back, idle: the cut run stays unfinished
        feed_store(target, [dev.status("online")])
        assert views.fleet(target)["running"] == []
        assert _states(views.device(target, "orin-1"), "orin-1") == {"r1": "unfinished"}
        # it starts another run (busy, naming it, as every agent run says): the cut one stays unfinished
        feed_store(
            target, [dev.status("busy", run_id="r2"), dev.run_started("r2", 4), dev.progress("r2", 1, 4)]
        )
        assert _states(views.device(target, "orin-1"), "orin-1") == {"r1": "unfinished", "r2": "running"}
        feed_store(target, [dev.finished("r2", 4)])
        assert _states(views.device(target, "orin-1"), "orin-1") == {"r1": "unfinished", "r2": "finished"}


def test_a_search_without_a_limit_is_shown_as_a_lower_bound(store, pg_store, result_factory, feed_store):
    search = {"bounded_by": "max_tokens=128", "largest_ok": 128}
    records = [
        result_factory(context_len=64, metrics={"ttft": ("ms", [1.0])}),
        result_factory(
            context_len=128,
            metrics={"max_context": ("tokens", [128])},
            details={"kind": "max_context", "search": search},
        ),
    ]
    for target in (store, pg_store):
        feed_store(target, records)
        (row,) = views.device(target, "orin-1")["characterization"]["max_context"]
        assert row["searched_text"] == "≥ 128 tokens (no limit found up to max_tokens=128)"
        assert row["search_bounded_by"] == "max_tokens=128"
