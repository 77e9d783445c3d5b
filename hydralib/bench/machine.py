"""The machine a benchmark runs on: threads, load, device, and peak memory probes.

CPU memory is the resident set size of the process (Linux ``/proc/self/status``):
``VmRSS`` now and ``VmHWM``, its high-water mark. Writing ``5`` to
``/proc/self/clear_refs`` resets the high-water mark to the current RSS
(Linux >= 4.0), so a method's peak can be read after its inputs are already
resident. ``tracemalloc`` is not used: it does not see torch's allocations.
On CUDA the peak is ``torch.cuda.max_memory_allocated``.

Example
-------
>>> probe = MemoryProbe("cpu")
>>> probe.start()
>>> stats = probe.stop()
>>> stats["run_peak_mib"] >= stats["setup_rss_mib"] > 0
True
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time

__all__ = ["THREAD_ENV", "thread_env", "set_threads", "set_numpy_blas_threads", "resolve_device", "machine_info",
           "load_average", "rss_mib", "hwm_mib", "reset_hwm", "MemoryProbe", "synchronize"]

#: Environment variables that fix the number of threads of BLAS/OpenMP in a child process.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
MIB = 2**20


def thread_env(threads: int) -> dict[str, str]:
    """Environment entries that fix BLAS/OpenMP threads for a child process."""
    return {key: str(int(threads)) for key in THREAD_ENV}


def set_threads(threads: int) -> int:
    """Fix torch's intra-op threads (and inter-op threads, when still possible) to ``threads``; return it.

    Also numpy's own BLAS (:func:`set_numpy_blas_threads`): numpy and scipy
    (e.g. the clustering of tasks) bring a BLAS of their own, so a thread
    count must hold for both libraries (a child process gets both from
    :func:`thread_env`).
    """
    import torch

    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only allowed before any parallel work started
        pass
    set_numpy_blas_threads(threads)
    return torch.get_num_threads()


def set_numpy_blas_threads(threads: int) -> bool:
    """Fix the threads of the BLAS libraries loaded in this process (numpy's and scipy's OpenBLAS); True if any.

    OpenBLAS reads ``OPENBLAS_NUM_THREADS`` only when it is loaded, so a
    process that imported numpy before choosing its threads needs this call
    (``threadpoolctl``, which finds the loaded libraries and calls their setters).
    """
    import numpy  # noqa: F401  (loads numpy's BLAS, if it is not loaded yet)
    import scipy.linalg  # noqa: F401  (and scipy's, which the eigensolver uses)
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=int(threads), user_api="blas")
    return any(info["user_api"] == "blas" for info in threadpool_info())


def resolve_device(device: str | None) -> str:
    """``"auto"``/None -> ``"cuda"`` when available, else ``"cpu"``; checks that CUDA exists when asked for."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        from ..errors import HydraError

        raise HydraError(f"device {device!r}: CUDA is not available on this machine")
    return str(device)


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def _read_status(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024 / MIB
    except OSError:  # pragma: no cover
        return None
    return None


def rss_mib() -> float | None:
    """Resident set size now, MiB (Linux; None elsewhere)."""
    return _read_status("VmRSS")


def hwm_mib() -> float:
    """Peak resident set size so far (``VmHWM``; ``ru_maxrss`` where /proc is missing), MiB."""
    value = _read_status("VmHWM")
    if value is None:  # pragma: no cover
        scale = 1 if sys.platform == "darwin" else 1024
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB
    return value


def reset_hwm() -> bool:
    """Reset the peak RSS to the current RSS (``/proc/self/clear_refs``); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def synchronize(device: str) -> None:
    """Wait for queued GPU work (no-op on CPU), so that a timer measures what ran."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class MemoryProbe:
    """Peak memory of a block of work, with its inputs already resident.

    ``start()`` records the RSS (the set-up: interpreter, torch, the adapters,
    the peft model) and resets the high-water mark (and CUDA's peak counter);
    ``stop()`` returns ``setup_rss_mib``, ``run_peak_mib`` (peak RSS while the
    work ran, inputs included) and ``method_mib`` (their difference: what the
    work itself added), plus ``cuda_peak_mib`` / ``cuda_method_mib`` on CUDA and
    ``hwm_reset`` (False: the peak may include set-up transients).
    """

    def __init__(self, device: str = "cpu"):
        self.device = str(device)
        self.setup_rss = 0.0
        self.setup_peak = 0.0
        self.hwm_reset = False
        self.cuda_base = 0.0

    def start(self) -> None:
        import gc

        gc.collect()
        self.setup_peak = hwm_mib()
        self.setup_rss = rss_mib() or self.setup_peak
        self.hwm_reset = reset_hwm()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.cuda_base = torch.cuda.memory_allocated() / MIB

    def stop(self) -> dict:
        synchronize(self.device)
        peak = hwm_mib()
        out = {
            "setup_peak_mib": round(self.setup_peak, 1),
            "setup_rss_mib": round(self.setup_rss, 1),
            "run_peak_mib": round(peak, 1),
            "method_mib": round(max(peak - self.setup_rss, 0.0), 1),
            "hwm_reset": self.hwm_reset,
        }
        if self.device.startswith("cuda"):
            import torch

            cuda_peak = torch.cuda.max_memory_allocated() / MIB
            out.update(cuda_peak_mib=round(cuda_peak, 1), cuda_setup_mib=round(self.cuda_base, 1),
                       cuda_method_mib=round(max(cuda_peak - self.cuda_base, 0.0), 1))
        return out


def cpu_model() -> str | None:
    """The CPU's model name for the record (the ``model name`` line of ``/proc/cpuinfo``); ``None`` where there is
    no such file or line (not Linux). Nothing is chosen by it."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return None


def machine_info(device: str, threads: int) -> dict:
    """CPU model, cores, torch threads, load average, device and library versions (JSON-ready)."""
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": int(threads),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": device,
        "torch": torch.__version__,
        "load_before": load_average(),
        "time_start": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        with open("/proc/meminfo") as fh:
            info["memory_total_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:  # pragma: no cover
        pass
    for name in ("peft", "transformers", "numpy"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # pragma: no cover
            info[name] = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)
    return info
