"""``--backend auto``: the fastest installed backend and precision for this machine and model, behind a quality gate.

The probe, run once per machine and model and then cached:

1. **Candidates**: torch fp32; onnxruntime fp32; OpenVINO fp32 and bf16 (only on CPUs that compute bf16 natively:
   AVX512-BF16 or AMX; elsewhere OpenVINO would emulate it), and int8 (``mlkasr.deployment.quantize``) when
   ``--precision int8`` allows it, as far as the packages are installed. CUDA devices use torch fp32.
2. **Quality gate** for every reduced precision: Y-PSNR on the embedded Set5 (``datasets/samples/Set5``, at the
   model's scale, border = scale, as ``mlkasr eval`` computes it) against torch fp32 on the same images. A
   precision passes if the mean drops by at most ``GATE_MEAN_DB`` and no image by more than ``GATE_WORST_DB``.
   fp32 runtimes need no gate: each is checked against torch at start-up (max |diff| 1e-4).
3. **Timing**: every candidate still standing runs the same LR tile (median of ``PROBE_RUNS`` after a warm-up);
   the fastest wins.

The result (choice, gate drops, timings, reasons for what was rejected) is stored as JSON beside the cached ONNX
exports, keyed by the weights and by what decides speed here: the CPU, its threads, the library versions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import MlkasrError

GATE_MEAN_DB = 0.05  # largest mean Y-PSNR drop on Set5 that a reduced precision may cost
GATE_WORST_DB = 0.1  # largest drop on any one image
PROBE_TILE = (128, 128)  # LR pixels the timing probe runs on
PROBE_RUNS = 5
PROBE_FORMAT = 1  # bump when the probe's method changes: cached choices are then made again
# CPU features that decide which precisions are fast; part of the cache key
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")
# --precision with --backend auto names the lowest precision the probe may choose. int8 only when asked: its
# graphs compile ~5x slower in OpenVINO (11 s against 2 s per input shape for man-tiny x4 on the 2-core EPYC,
# paid again for every new image size) and run about as fast as bf16 there, at a larger PSNR cost
BOUNDS = {"auto": ("fp32", "bf16"), "fp32": ("fp32",), "bf16": ("fp32", "bf16"), "int8": ("fp32", "bf16", "int8")}

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class GateResult:
    """A reduced precision against torch fp32 on the gate's images (drops in dB; positive = worse)."""

    images: str  # the gate set's name
    mean_drop_db: float
    worst_drop_db: float
    worst_image: str

    @property
    def passed(self) -> bool:
        return self.mean_drop_db <= GATE_MEAN_DB and self.worst_drop_db <= GATE_WORST_DB

    def describe(self) -> str:
        return (f"{self.images} {-self.mean_drop_db:+.3f} dB (worst image {self.worst_image} "
                f"{-self.worst_drop_db:+.3f} dB)")


@dataclass(frozen=True)
class AutoChoice:
    """What the probe chose, what it measured, and why the others were not chosen."""

    backend: str
    precision: str
    timings_ms: dict[str, float] = field(default_factory=dict)  # "backend precision" -> median ms per probe tile
    gates: dict[str, GateResult] = field(default_factory=dict)  # reduced precisions only
    rejected: dict[str, str] = field(default_factory=dict)  # "backend precision" -> reason
    cached: str | None = None  # the file the choice was read from; None when measured now

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    def describe(self) -> str:
        """One line: "openvino bf16, gate: Set5 -0.004 dB (...), 2.61x torch fp32 in the probe"."""
        parts = [self.label]
        gate = self.gates.get(self.label)
        if gate is not None:
            parts.append(f"gate: {gate.describe()}")
        reference = self.timings_ms.get("torch fp32")
        mine = self.timings_ms.get(self.label)
        if reference and mine and self.label != "torch fp32":
            parts.append(f"{reference / mine:.2f}x torch fp32 in the probe")
        return ", ".join(parts) + (" (cached)" if self.cached else "")

    def report(self) -> str:
        """Every candidate, measured or rejected, one per line."""
        lines = []
        for label, ms in sorted(self.timings_ms.items(), key=lambda item: item[1]):
            gate = self.gates.get(label)
            lines.append(f"  {label:<18} {ms:8.1f} ms" + (f"  gate {gate.describe()}" if gate else ""))
        for label, reason in self.rejected.items():
            lines.append(f"  {label:<18} not used: {reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("cached")
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str) -> AutoChoice:
        gates = {k: GateResult(**v) for k, v in data["gates"].items()}
        return cls(data["backend"], data["precision"], dict(data["timings_ms"]), gates, dict(data["rejected"]),
                   cached=source)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> tuple[str, ...]:
    """The speed-relevant CPU features this machine has (empty where /proc/cpuinfo is not available)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return tuple(flag for flag in SPEED_FLAGS if flag in present)
    return ()


def native_bf16(flags: tuple[str, ...]) -> bool:
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gate_images() -> Path | None:
    """The embedded Set5 (``datasets/samples/Set5`` of a source checkout), or None where it is not installed."""
    folder = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "Set5"
    return folder if (folder / "HR").is_dir() else None


def candidates(device_type: str, precision: str, flags: tuple[str, ...]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(backend, precision) pairs worth probing, and the reasons the others are left out."""
    from ..deployment.optional import available

    if device_type != "cpu":
        return [("torch", "fp32")], {}
    allowed = BOUNDS[precision]
    chosen, skipped = [("torch", "fp32")], {}
    exporter = available("onnx") and available("onnxscript")
    for backend, wanted in (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")):
        label = f"{backend} {wanted}"
        if wanted not in allowed:
            continue
        if not (exporter and available(backend)):
            skipped[label] = 'not installed (pip install "mlkasr[deploy]")'
        elif wanted == "bf16" and not native_bf16(flags):
            skipped[label] = "this CPU has no native bf16 (AVX512-BF16 or AMX)"
        elif wanted == "int8" and not available("onnxruntime"):
            skipped[label] = "the int8 quantizer needs onnxruntime"
        else:
            chosen.append((backend, wanted))
    return chosen, skipped


# The packages that can provide each runtime: their versions are read from the installed metadata, because importing
# the runtimes only to name their versions would cost every cached run their start-up.
RUNTIME_DISTRIBUTIONS = {
    "openvino": ("openvino",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "onnxscript": ("onnxscript",),
}


def _installed_version(distributions: tuple[str, ...]) -> str:
    for distribution in distributions:
        try:
            return f"{distribution}=={importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "-"


def probe_key(model: nn.Module, device_type: str, pairs: list[tuple[str, str]], flags: tuple[str, ...]) -> str:
    """Same key = same choice: the weights, the machine, the threads, the libraries, the candidates and the rules."""
    from ..deployment.onnx_export import weights_digest

    versions = [f"torch {torch.__version__}", f"mlkasr {__version__}"]
    versions += [f"{name} {_installed_version(distributions)}" for name, distributions in RUNTIME_DISTRIBUTIONS.items()]
    parts = [weights_digest(model), device_type, cpu_name(), ",".join(flags), f"threads {torch.get_num_threads()}",
             ",".join(f"{b} {p}" for b, p in pairs), f"gate {GATE_MEAN_DB}/{GATE_WORST_DB}", f"probe {PROBE_FORMAT} {PROBE_TILE}", *versions]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _choice_path(model: nn.Module, key: str) -> Path:
    from ..deployment.onnx_export import cache_dir

    return cache_dir() / f"{model.spec.name}_x{model.scale}-auto-{key}.json"


def _read_cached(path: Path) -> AutoChoice | None:
    try:
        return AutoChoice.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: probe again (and replace it)


def _write_cached(path: Path, choice: AutoChoice) -> None:
    from ..imaging.io import write_bytes_atomic

    try:
        write_bytes_atomic(path, json.dumps(choice.to_dict(), indent=2).encode())
    except OSError:
        pass  # a read-only cache only costs a new probe next time


def measure_gate(model: nn.Module, options, reference: dict[str, float], images, backend=None) -> GateResult:
    """Y-PSNR drop of ``options`` (or of a ready ``backend``) against the fp32 reference on the gate's images."""
    from ..evaluation import evaluate
    from .engine import Upscaler

    result = evaluate(Upscaler(model, options, backend=backend), [images])[images.name]
    drops = {image.name: reference[image.name] - image.psnr for image in result.images}
    worst = max(drops, key=drops.get)
    mean = statistics.fmean(reference.values()) - result.psnr
    return GateResult(images.name, round(mean, 4), round(drops[worst], 4), worst)


def time_probe(upscalers: dict[str, object]) -> tuple[dict[str, float], dict[str, str]]:
    """Median milliseconds of one network call on the probe tile for each upscaler, after a warm-up; and the
    candidates whose runtime failed on it, with the reason (torch's own failure is raised).

    The candidates take turns, run by run, so that a burst of load from another process slows all of them alike
    instead of deciding the race.
    """
    from ..deployment.parity import synthetic_image

    x = synthetic_image(*PROBE_TILE, seed=3)
    times: dict[str, list[float]] = {label: [] for label in upscalers}
    failed: dict[str, str] = {}
    with torch.inference_mode():
        for run in range(PROBE_RUNS + 1):  # run 0 warms up: compiles, allocations, caches
            for label, upscaler in upscalers.items():
                if label in failed:
                    continue
                tile = x.to(upscaler.device).contiguous(memory_format=upscaler.memory_format)
                started = time.perf_counter()
                try:
                    upscaler.backend(tile)
                except Exception as exc:  # noqa: BLE001 - a runtime's own failure rules it out, never the command
                    if upscaler.options.backend == "torch":
                        raise
                    failed[label] = f"failed on the probe tile: {_first_line(exc)}"
                    continue
                if run:
                    times[label].append((time.perf_counter() - started) * 1000)
    timings = {label: round(statistics.median(v), 2) for label, v in times.items() if label not in failed}
    return timings, failed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def choose_backend(model: nn.Module, options, log: Log | None = None) -> tuple[AutoChoice, object | None]:
    """The fastest (backend, precision) for ``model`` here that passes the gate: cached, else probed now; and,
    when probed now, the chosen runtime as the probe built it (None: build it), so that it is not compiled twice."""
    from .engine import Upscaler

    log = log or _stderr
    device_type = options.device_type
    flags = cpu_flags() if device_type == "cpu" else ()
    pairs, rejected = candidates(device_type, options.precision, flags)
    if len(pairs) == 1:
        return AutoChoice(*pairs[0], rejected=rejected), None
    key = probe_key(model, device_type, pairs, flags)
    path = _choice_path(model, key)
    cached = _read_cached(path)
    if cached is not None:
        return cached, None
    log(f"choosing a backend for {model.spec.name} x{model.scale} on this machine (once; cached in {path.parent}) ...")
    plain = replace(options, tile=None, self_ensemble=False)
    reduced = [f"{b} {p}" for b, p in pairs if p != "fp32"]
    gate_set, reference = gate_reference(model, plain) if reduced else (None, {})
    if reduced and gate_set is None:
        for label in reduced:
            rejected[label] = "the quality gate's images (datasets/samples/Set5 of a source checkout) are not here"
    ready, gates = {}, {}
    for backend, precision in pairs:
        label = f"{backend} {precision}"
        candidate = replace(plain, backend=backend, precision=precision)
        if precision != "fp32" and gate_set is None:
            continue  # rejected above: no gate images
        try:
            upscaler = Upscaler(model, candidate, log=log)  # built once: the gate and the timing use the same one
            if precision != "fp32":
                gates[label] = measure_gate(model, candidate, reference, gate_set, backend=upscaler.backend)
                if not gates[label].passed:
                    rejected[label] = (f"failed the quality gate: {gates[label].describe()}; allowed "
                                       f"-{GATE_MEAN_DB} dB mean, -{GATE_WORST_DB} dB per image")
                    continue
            ready[label] = upscaler
        except MlkasrError as exc:
            rejected[label] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a runtime's own failure rules it out, never the command
            if backend == "torch":
                raise
            rejected[label] = f"{backend} failed: {_first_line(exc)}"
    timings, failed = time_probe(ready)
    rejected.update(failed)
    best = min(timings, key=timings.get)
    backend, precision = best.split(" ")
    choice = AutoChoice(backend, precision, timings, gates, rejected)
    _write_cached(path, choice)
    return choice, ready[best].backend


def gate_reference(model: nn.Module, options):
    """The gate's images and their per-image fp32 PSNRs, or (None, {}) where the images are not installed."""
    from ..evaluation import evaluate, load_benchmark_set
    from .engine import Upscaler

    folder = gate_images()
    if folder is None:
        return None, {}
    images = load_benchmark_set(folder, model.scale, name="Set5")
    exact = evaluate(Upscaler(model, replace(options, backend="torch", precision="fp32")), [images])["Set5"]
    return images, {image.name: image.psnr for image in exact.images}


__all__ = ["AutoChoice", "GateResult", "GATE_MEAN_DB", "GATE_WORST_DB", "choose_backend", "cpu_flags", "cpu_name",
           "gate_reference", "measure_gate", "native_bf16"]
