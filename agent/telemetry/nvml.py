"""Desktop/datacenter NVIDIA GPUs through NVML (`nvidia-ml-py`, module `pynvml`), one backend per GPU.

Facts this module rests on (NVML API reference):
- `nvmlDeviceGetPowerUsage` is a ~1 s moving average on Ampere and newer; the instantaneous value is
  the field `NVML_FI_DEV_POWER_INSTANT` (and `NVML_FI_DEV_POWER_AVERAGE` the averaged one).
- `nvmlDeviceGetTotalEnergyConsumption` is a mJ counter since the driver loaded (Volta+).
- Memory comes from the v2 call (`nvmlMemory_v2`), which does not count reserved memory as used.
- Clock-event reasons: SW power cap, HW slowdown / power brake, SW / HW thermal slowdown.
- On Jetson, `nvmlInit` may succeed while these calls return NotSupported: every metric is probed.

NVML errors are translated into `TelemetryError` here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from ctxscope.agent.telemetry.base import Backend, TelemetryError, unit_of

_SW_POWER_CAP, _HW_SLOWDOWN, _SW_THERMAL, _HW_THERMAL, _HW_POWER_BRAKE = 0x4, 0x8, 0x20, 0x40, 0x80
_AVERAGED = "NVML nvmlDeviceGetPowerUsage (~1 s moving average on Ampere and newer)"
_INSTANT = "NVML field NVML_FI_DEV_POWER_INSTANT (instantaneous board power)"


def _nvml() -> Any:
    import pynvml

    return pynvml


def nvml_call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call an NVML function, turning its errors (and a missing library) into TelemetryError."""
    nv = _nvml()
    try:
        return fn(*args)
    except nv.NVMLError as exc:
        raise TelemetryError(f"{getattr(fn, '__name__', 'nvml')}: {exc}") from exc


def init() -> None:
    """Initialise NVML; TelemetryError when the library or driver is absent."""
    try:
        nv = _nvml()
    except ImportError as exc:
        raise TelemetryError("nvidia-ml-py is not installed") from exc
    nvml_call(nv.nvmlInit)


def shutdown() -> None:
    nv = _nvml()
    nvml_call(nv.nvmlShutdown)


def device_count() -> int:
    """GPUs NVML sees; 0 when NVML is unusable. Never raises."""
    try:
        init()
    except TelemetryError:
        return 0
    try:
        return int(nvml_call(_nvml().nvmlDeviceGetCount))
    except TelemetryError:
        return 0
    finally:
        shutdown()


def _field_values(handle: Any, fields: dict[str, int]) -> dict[str, float]:
    """Values of NVML fields that answered, by our name; a field that fails is left out."""
    nv = _nvml()
    if not fields:
        return {}
    raw = nvml_call(nv.nvmlDeviceGetFieldValues, handle, list(fields.values()))
    out: dict[str, float] = {}
    for name, value in zip(fields, raw, strict=True):
        if value.nvmlReturn != nv.NVML_SUCCESS:
            continue
        kind = value.valueType
        if kind == nv.NVML_VALUE_TYPE_DOUBLE:
            out[name] = float(value.value.dVal)
        elif kind == nv.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG:
            out[name] = float(value.value.ullVal)
        elif kind == nv.NVML_VALUE_TYPE_SIGNED_LONG_LONG:
            out[name] = float(value.value.sllVal)
        elif kind == nv.NVML_VALUE_TYPE_UNSIGNED_LONG:
            out[name] = float(value.value.ulVal)
        else:
            out[name] = float(value.value.uiVal)
    return out


class NvmlBackend(Backend):
    """One GPU by NVML index. Channel names are the shared ones (`power_w`, `temp_gpu_c`, ...)."""

    max_rate_hz = 100.0

    def __init__(self, index: int = 0, only: Collection[str] | None = None) -> None:
        """`only` restricts sampling to these metrics (fewer NVML calls per sample)."""
        super().__init__()
        self.index = index
        self.name = f"nvml{index}"
        self.only = frozenset(only) if only is not None else None
        self._handle: Any = None
        self.unavailable_reason: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}

    def available(self) -> bool:
        try:
            self.open()
        except TelemetryError as exc:
            self.unavailable_reason = str(exc)
            return False
        try:
            self._probe()
        except Exception as exc:  # a binding too old for one call must not break detection
            self.unavailable_reason = f"probe failed: {type(exc).__name__}: {exc}"
            self._metrics.clear()
        finally:
            self.close()
        if "power_w" not in self._metrics:
            self.unavailable_reason = self.unavailable_reason or "power readings not supported"
        return "power_w" in self._metrics

    def _probe(self) -> None:
        """Find the supported metrics by trying each reader once."""
        readings: dict[str, float] = {}
        for reader in self._readers(all_fields=True):
            try:
                readings.update(reader())
            except TelemetryError:
                continue
        self._metrics = {name: unit_of(name) for name in readings if self.only is None or name in self.only}
        try:
            fields = _field_values(self._handle, self._field_ids())
        except TelemetryError:
            fields = {}
        if "power_instant" in fields:
            self._power_method = _INSTANT
        elif "power_w" in self._metrics:
            self._power_method = _AVERAGED
        self._info = self._static_info()

    def open(self) -> None:
        init()
        try:
            self._handle = nvml_call(_nvml().nvmlDeviceGetHandleByIndex, self.index)
        except TelemetryError:
            shutdown()
            raise

    def close(self) -> None:
        if self._handle is not None:
            self._handle = None
            shutdown()

    def read(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for reader in self._readers(all_fields=False):
            try:
                values.update(reader())
            except TelemetryError:
                continue
        return {k: v for k, v in values.items() if k in self._metrics}

    # -- readers: each returns some metrics or raises TelemetryError ---------------------------------

    def _field_ids(self) -> dict[str, int]:
        # Field ids are the driver's (nvml.h); older bindings lack some names, the numbers still work.
        nv = _nvml()
        return {
            "power_instant": getattr(nv, "NVML_FI_DEV_POWER_INSTANT", 186),
            "power_average": getattr(nv, "NVML_FI_DEV_POWER_AVERAGE", 185),
            "temp_mem_c": getattr(nv, "NVML_FI_DEV_MEMORY_TEMP", 82),
        }

    def _readers(self, all_fields: bool) -> list[Callable[[], dict[str, float]]]:
        want = self._metrics
        readers: list[Callable[[], dict[str, float]]] = [self._read_fields]
        table: list[tuple[tuple[str, ...], Callable[[], dict[str, float]]]] = [
            (("energy_j",), self._read_energy),
            (("temp_gpu_c",), self._read_temperature),
            (("clock_gpu_mhz", "clock_mem_mhz"), self._read_clocks),
            (("throttle_power_cap", "throttle_thermal", "throttle_hw_slowdown"), self._read_throttle),
            (("mem_used_bytes",), self._read_memory),
            (("util_gpu_pct", "util_mem_pct"), self._read_utilization),
        ]
        readers += [fn for names, fn in table if all_fields or any(n in want for n in names)]
        if all_fields or ("power_w" in want and self._power_method == _AVERAGED):
            readers.append(self._read_power_usage)
        return readers

    def _read_fields(self) -> dict[str, float]:
        fields = _field_values(self._handle, self._field_ids())
        out: dict[str, float] = {}
        if "power_instant" in fields:
            out["power_w"] = fields["power_instant"] / 1000.0
        if "power_average" in fields:
            out["power_avg_w"] = fields["power_average"] / 1000.0
        if "temp_mem_c" in fields and fields["temp_mem_c"] > 0:
            out["temp_mem_c"] = fields["temp_mem_c"]
        return out

    def _read_power_usage(self) -> dict[str, float]:
        milliwatts = nvml_call(_nvml().nvmlDeviceGetPowerUsage, self._handle)
        if self._power_method == _INSTANT:
            return {"power_avg_w": milliwatts / 1000.0}
        return {"power_w": milliwatts / 1000.0}

    def _read_energy(self) -> dict[str, float]:
        return {"energy_j": nvml_call(_nvml().nvmlDeviceGetTotalEnergyConsumption, self._handle) / 1000.0}

    def _read_temperature(self) -> dict[str, float]:
        nv = _nvml()
        return {
            "temp_gpu_c": float(nvml_call(nv.nvmlDeviceGetTemperature, self._handle, nv.NVML_TEMPERATURE_GPU))
        }

    def _read_clocks(self) -> dict[str, float]:
        nv = _nvml()
        return {
            "clock_gpu_mhz": float(nvml_call(nv.nvmlDeviceGetClockInfo, self._handle, nv.NVML_CLOCK_SM)),
            "clock_mem_mhz": float(nvml_call(nv.nvmlDeviceGetClockInfo, self._handle, nv.NVML_CLOCK_MEM)),
        }

    def _read_throttle(self) -> dict[str, float]:
        # Bits of nvmlClocksEventReason* (formerly nvmlClocksThrottleReason*), nvml.h.
        nv = _nvml()
        query = (
            getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        reasons = int(nvml_call(query, self._handle))
        return {
            "throttle_power_cap": float(bool(reasons & _SW_POWER_CAP)),
            "throttle_thermal": float(bool(reasons & (_SW_THERMAL | _HW_THERMAL))),
            "throttle_hw_slowdown": float(bool(reasons & (_HW_SLOWDOWN | _HW_POWER_BRAKE))),
        }

    def _read_memory(self) -> dict[str, float]:
        nv = _nvml()
        memory = nvml_call(nv.nvmlDeviceGetMemoryInfo, self._handle, nv.nvmlMemory_v2)
        return {"mem_used_bytes": float(memory.used)}

    def _read_utilization(self) -> dict[str, float]:
        rates = nvml_call(_nvml().nvmlDeviceGetUtilizationRates, self._handle)
        return {"util_gpu_pct": float(rates.gpu), "util_mem_pct": float(rates.memory)}

    def _static_info(self) -> dict[str, str]:
        nv = _nvml()
        info: dict[str, str] = {}
        queries: dict[str, Callable[[], Any]] = {
            "name": lambda: nvml_call(nv.nvmlDeviceGetName, self._handle),
            "driver": lambda: nvml_call(nv.nvmlSystemGetDriverVersion),
            "power_limit_w": lambda: nvml_call(nv.nvmlDeviceGetEnforcedPowerLimit, self._handle) / 1000.0,
            "memory_total_bytes": lambda: (
                nvml_call(nv.nvmlDeviceGetMemoryInfo, self._handle, nv.nvmlMemory_v2).total
            ),
        }
        for key, query in queries.items():
            try:
                info[key] = str(query())
            except TelemetryError:
                continue
        if self._power_method:
            info["power_method"] = self._power_method
        return info
