"""TelemetrySession.summarize on windows sampled for real, from a replayed Orin NX power trace."""

from __future__ import annotations

import sys
import time

import pytest

from ctxscope.agent.phases import DeviceBusy, PhaseWindow
from ctxscope.agent.telemetry.host import HostBackend
from ctxscope.agent.telemetry.session import TelemetrySession
from ctxscope.agent.telemetry.tegrastats import TegrastatsBackend

pytestmark = pytest.mark.slow

NX_VDD_IN_W = 6.120  # the recorded Orin NX line, replayed at 20 Hz: a constant-power trace


def _window(name: str, seconds: float, tokens: int) -> PhaseWindow:
    start = time.monotonic_ns()
    time.sleep(seconds)
    return PhaseWindow(name, start, time.monotonic_ns(), tokens=tokens)


@pytest.fixture
def nx_session(replay):
    tegra = TegrastatsBackend(interval_ms=50, command=replay("orin_nx", 50))
    assert tegra.available()
    host = HostBackend()
    host.available()
    with TelemetrySession([tegra, host], rate_hz=20.0, min_samples=20) as session:
        time.sleep(0.3)
        yield session


def test_energy_power_temperature_per_phase(nx_session):
    assert nx_session.min_window_ns == 1_000_000_000
    prefill = _window("prefill", 1.2, tokens=4096)
    decode = [_window("decode", 1.1, tokens=64), _window("decode", 1.1, tokens=64)]
    report = nx_session.summarize([prefill, *decode])
    m = report.metrics
    assert m["prefill_energy"].unit == "J"
    assert m["prefill_energy"].samples[0] == pytest.approx(NX_VDD_IN_W * prefill.duration_s, rel=1e-6)
    assert m["prefill_energy_per_token"].samples[0] == pytest.approx(
        NX_VDD_IN_W * prefill.duration_s / 4096, rel=1e-6
    )
    assert m["prefill_power_mean"].median == pytest.approx(NX_VDD_IN_W)
    assert m["prefill_power_peak"].median == pytest.approx(NX_VDD_IN_W)
    assert m["decode_energy"].n == 2
    assert m["decode_temp_max_tj"].samples == [pytest.approx(46.937)] * 2
    assert "VDD_IN" in m["prefill_energy"].method and "tegrastats" in m["prefill_energy"].method
    assert report.flags["prefill_undersampled"] is False
    # no hardware counter, no GPU clock and no throttle reasons in tegrastats: absent, not zero
    assert "prefill_energy_counter" not in m
    assert "prefill_clock_gpu_min" not in m
    assert not any("throttle" in f or "clock_drop" in f for f in report.flags)
    windows = report.details["prefill_windows"]
    assert windows[0]["power_samples"] >= 20


def test_energy_is_per_run_when_a_window_holds_several(nx_session):
    start = time.monotonic_ns()
    time.sleep(1.2)
    window = PhaseWindow("prefill", start, time.monotonic_ns(), tokens=2 * 4096, repetitions=2)
    m = nx_session.summarize([window]).metrics
    assert m["prefill_energy"].samples[0] == pytest.approx(NX_VDD_IN_W * window.duration_s / 2, rel=1e-6)
    assert "/ the window's repetitions: energy of one prefill (windows of 2 " in m["prefill_energy"].method
    assert m["prefill_energy_per_token"].samples[0] == pytest.approx(
        NX_VDD_IN_W * window.duration_s / (2 * 4096), rel=1e-6
    )


def test_constant_power_leaves_nothing_above_idle(nx_session):
    from ctxscope.agent.engine.idle import above_idle

    idle_power = nx_session.idle_power(0.5)
    assert idle_power.median == pytest.approx(NX_VDD_IN_W)
    report = nx_session.summarize([_window("prefill", 1.2, tokens=4096)])
    extra = above_idle(report.details, idle_power)["prefill_energy_above_idle"].samples[0]
    assert extra == pytest.approx(0.0, abs=1e-6)


def test_short_window_is_flagged_undersampled(nx_session):
    report = nx_session.summarize([_window("decode", 0.3, tokens=1)])
    assert report.flags["decode_undersampled"] is True
    assert report.metrics["decode_energy"].samples[0] == pytest.approx(NX_VDD_IN_W * 0.3, rel=0.05)


def test_idle_power_is_a_metric_of_samples(nx_session):
    idle = nx_session.idle_power(1.0)
    assert idle is not None and idle.unit == "W"
    assert idle.n >= 18
    assert idle.median == pytest.approx(NX_VDD_IN_W)


def test_host_only_session_reports_no_energy():
    host = HostBackend()
    host.available()
    with TelemetrySession([host], rate_hz=20.0) as session:
        time.sleep(0.2)
        report = session.summarize([_window("prefill", 0.5, tokens=10)])
        assert session.idle_power(0.2) is None
    assert not any(k.startswith("prefill_energy") or "power" in k for k in report.metrics)
    assert "prefill_undersampled" not in report.flags


def test_sampler_errors_are_kept_after_the_session_stops():
    broken = TegrastatsBackend(command=["/nonexistent/tegrastats"])  # open() fails in the sampler
    host = HostBackend()
    host.available()
    with TelemetrySession([broken, host], rate_hz=20.0) as session:
        time.sleep(0.2)
    assert any(error.startswith("tegrastats: open failed") for error in session.errors)


def test_an_idle_window_with_the_gpu_busy_is_measured_again_then_refused(tmp_path):
    """The recorded Orin NX line with its GPU load (GR3D_FREQ) set to 99%, as while another process
    computes on the GPU: every idle window is refused, and DeviceBusy says with what."""
    from ctxscope.agent.engine.idle import measure_idle
    from tests.agent.telemetry.conftest import REPLAY, tegrastats_lines

    (line,) = tegrastats_lines("orin_nx")
    busy = tmp_path / "tegrastats_busy.txt"
    busy.write_text(line.replace("GR3D_FREQ 0%", "GR3D_FREQ 99%") + "\n")
    tegra = TegrastatsBackend(
        interval_ms=50, command=[sys.executable, "-u", str(REPLAY), str(busy), "--interval", "50"]
    )
    assert tegra.available()
    with TelemetrySession([tegra], rate_hz=20.0) as session:
        time.sleep(0.3)
        started = time.monotonic()
        with pytest.raises(DeviceBusy, match=r"GPU utilization 99% on average .* in each of 2 idle windows"):
            session.idle_power(0.4, attempts=2)
        assert time.monotonic() - started >= 0.8  # both windows were measured
        reading = measure_idle(session)
    assert reading.power is None and "the GPU was busy" in reading.absent


class _FullDisk:
    """A record sink on a full disk: every telemetry batch is refused."""

    def emit(self, message_cls: type, **fields: object) -> object:
        raise OSError(28, "No space left on device")


def test_a_sink_refusing_every_batch_is_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    host = HostBackend()
    host.available()
    with TelemetrySession([host], rate_hz=20.0, sink=_FullDisk(), batch_interval_s=0.05) as session:
        time.sleep(1.5)
    assert session.emit_failures >= 10
    lines = [r for r in caplog.records if "could not be emitted" in r.getMessage()]
    assert 1 <= len(lines) <= 5, "one line a batch interval, for as long as the disk stays full"
