"""XLA:CPU settings that fmjax's entry points apply before jax is imported.

  from fmjax.core import xla_cpu
  xla_cpu.apply_defaults()   # before `import jax`

Each setting goes into XLA_FLAGS only when XLA_FLAGS does not already name it, so a user's
own flags always win. Measured on a 2-core AMD EPYC (Zen 3, AVX2), quickstart model, float32
(benchmarks/README.md, "XLA:CPU settings"):

- `--xla_cpu_experimental_ynn_fusion_type=reduce`: XLA's default also hands convolutions,
  dots and elementwise fusions to the YNNPACK library (with this flag only fusions built
  around reductions go there, which may still take in a neighbouring convolution or dot;
  benchmarks/README.md, "The issue's five rows"), whose 3x3 convolution weight
  gradients run at about 5 GFLOP/s here (a 32->32 channel 3x3 convolution's gradient on a
  [32,32,32,32] batch: 130 ms against 29 ms with XLA's own emitter). Reductions stay with
  YNNPACK, which sums over leading axes about 8x faster than XLA's loops.
- `--xla_backend_optimization_level=1`: LLVM's -O1 instead of -O2 compiles the small model's
  programs in about half the time and ran them no slower here.
- no device count: the CPU stays one XLA device whose intra-op threads use every core. fmjax
  split it into one device per core until 2026-12-04; on 2-core machines one device now trains
  the quickstart 1.24x faster than two (benchmarks/README.md, "One CPU device or one per
  core"). `XLA_FLAGS=--xla_force_host_platform_device_count=N` still splits it.

Separately, `restart_with_malloc_tunables` (for the `__main__` of entry points) restarts the
process once with glibc malloc settings that stop each step's temporaries being mapped afresh.

The optimisation level also applies to GPU code generation, so it is set only when no GPU or
TPU plugin is installed or JAX_PLATFORMS is `cpu`. FMJAX_XLA_CPU_DEFAULTS=0 in the
environment leaves XLA_FLAGS as it is (to compare with XLA's own defaults).
"""

from __future__ import annotations

import importlib.util
import os

CPU_FLAGS = (("xla_cpu_experimental_ynn_fusion_type", "reduce"),)
CPU_ONLY_FLAGS = (("xla_backend_optimization_level", "1"),)
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                       "jax_rocm7_plugin", "libtpu", "jax_plugins.xla_cuda12",
                       "jax_plugins.xla_cuda13")


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


def cpu_only() -> bool:
  """True when JAX can only run on the CPU here: JAX_PLATFORMS is `cpu`, or no GPU/TPU
  plugin is installed."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms == "cpu"
  return not any(_installed(m) for m in ACCELERATOR_PLUGINS)


def flags_with_defaults(xla_flags: str, cpu_only_here: bool | None = None,
                        cpu_settings: bool = True) -> str:
  """`xla_flags` with fmjax's CPU flags added for every flag it does not name (none when
  `cpu_settings` is False; the CPU-only ones where `cpu_only_here`, by default `cpu_only()`)."""
  if not cpu_settings:
    return xla_flags.strip()
  cpu_only_here = cpu_only() if cpu_only_here is None else cpu_only_here
  settings = list(CPU_FLAGS) + (list(CPU_ONLY_FLAGS) if cpu_only_here else [])
  added = [f"--{name}={value}" for name, value in settings if name not in xla_flags]
  return " ".join([xla_flags.strip()] + added).strip()


def apply_defaults() -> None:
  """Adds fmjax's CPU settings to XLA_FLAGS (see the module docstring). Call it before jax is
  imported; afterwards XLA has read its flags and this changes nothing."""
  os.environ["XLA_FLAGS"] = flags_with_defaults(os.environ.get("XLA_FLAGS", ""),
                                                cpu_settings=_settings_on())


def _settings_on() -> bool:
  """False when FMJAX_XLA_CPU_DEFAULTS=0 asks for XLA's and glibc's own defaults."""
  return os.environ.get("FMJAX_XLA_CPU_DEFAULTS", "1").strip() != "0"


# glibc's malloc settings for CPU runs (`restart_with_malloc_tunables`): transparent huge pages
# for what malloc maps (glibc >= 2.35), and freed memory kept for the next step rather than
# unmapped (no mmap for large blocks, no trimming of the heap below 128 GiB).
MALLOC_TUNABLES = ("glibc.malloc.hugetlb=1", "glibc.malloc.mmap_max=0",
                   f"glibc.malloc.trim_threshold={1 << 37}")


def _glibc_version() -> tuple[int, ...]:
  """(2, 36) for glibc 2.36; () when the C library is not glibc."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
  except (AttributeError, ValueError, OSError):
    return ()
  return tuple(int(v) for v in version.split(".")[:2]) if name == "glibc" else ()


def malloc_tunables_help() -> bool:
  """True where `restart_with_malloc_tunables` restarts: a CPU-only Linux run on glibc >=
  2.35 with transparent huge pages not `never`, GLIBC_TUNABLES unset (the user's own win),
  and FMJAX_XLA_CPU_DEFAULTS not 0."""
  if not _settings_on() or "GLIBC_TUNABLES" in os.environ:
    return False
  if _glibc_version() < (2, 35) or not cpu_only():
    return False
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def restart_with_malloc_tunables() -> None:
  """Re-executes this process once, with the same command line, with GLIBC_TUNABLES set to
  MALLOC_TUNABLES (where `malloc_tunables_help`); for the `__main__` of fmjax's entry points
  and benchmarks, before JAX is imported.

  XLA:CPU allocates each call's temporary buffer afresh and glibc maps blocks that large
  (over 64 MiB in a thread's arena) with mmap and unmaps them when freed, so every training
  step faults its pages in again and the kernel clears them: the quickstart's step (221 MB
  of temporaries) took 54,000 page faults and spent about a quarter of its CPU time in the
  kernel (benchmarks/README.md, "Page faults"). glibc reads GLIBC_TUNABLES only when a
  process starts, hence the restart."""
  import sys  # pylint: disable=g-import-not-at-top
  argv = list(getattr(sys, "orig_argv", []))
  if "jax" in sys.modules or len(argv) < 2 or argv[1] == "-" or not malloc_tunables_help():
    return
  os.environ["GLIBC_TUNABLES"] = ":".join(MALLOC_TUNABLES)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable] + argv[1:])
