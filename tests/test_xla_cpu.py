"""fmjax's XLA:CPU settings (fmjax/core/xla_cpu.py): a user's own flags win, and the kernels
they select (XLA's convolutions, YNNPACK's reductions) match float64 oracles."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.core import xla_cpu

from conftest import REPO


def test_defaults_are_added_only_where_the_user_set_nothing():
  flags = xla_cpu.flags_with_defaults("", cpu_only_here=True)
  assert flags.split() == ["--xla_cpu_experimental_ynn_fusion_type=reduce",
                           "--xla_backend_optimization_level=1"]
  mine = "--xla_backend_optimization_level=3 --xla_cpu_experimental_ynn_fusion_type=dot"
  assert xla_cpu.flags_with_defaults(mine, cpu_only_here=True) == mine
  # With a GPU or TPU plugin, the optimisation level (which GPU code generation reads too) is
  # left alone.
  gpu = xla_cpu.flags_with_defaults("", cpu_only_here=False)
  assert "optimization_level" not in gpu and "ynn_fusion_type=reduce" in gpu
  assert xla_cpu.flags_with_defaults(" --xla_dump_to=/x ", cpu_settings=False) == "--xla_dump_to=/x"


def test_cpu_only_reads_jax_platforms(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert xla_cpu.cpu_only()
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert not xla_cpu.cpu_only()


def test_the_entry_point_keeps_a_users_flags():
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=2",
         "PYTHONPATH": str(REPO)}
  out = subprocess.run([sys.executable, "-c", "import os, fmjax.main; print(os.environ['XLA_FLAGS'])"],
                       env=env, capture_output=True, text=True, timeout=300, check=True).stdout
  flags = out.split()
  assert "--xla_backend_optimization_level=2" in flags
  assert "--xla_backend_optimization_level=1" not in flags
  assert "--xla_cpu_experimental_ynn_fusion_type=reduce" in flags
  # The CPU stays one XLA device (one per core trained the quickstart 1.24x slower on 2 cores).
  assert not any(f.startswith("--xla_force_host_platform_device_count=") for f in flags)


def test_the_switch_leaves_xlas_own_defaults(monkeypatch):
  monkeypatch.setenv("FMJAX_XLA_CPU_DEFAULTS", "0")
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
  xla_cpu.apply_defaults()
  assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/nowhere"


_RESTART_PROBE = """
import os, sys
from fmjax.core import xla_cpu
print("start", os.environ.get("GLIBC_TUNABLES"), flush=True)
xla_cpu.restart_with_malloc_tunables()
import jax, jax.numpy as jnp, resource
from jax import lax
def loss(weights, images):  # three 3x3 convolutions on [32,64,64,32]: 128 MiB of temporaries
  for _ in range(3):
    images = jnp.tanh(lax.conv_general_dilated(images, weights, (1, 1), "SAME",
                                               dimension_numbers=("NHWC", "HWIO", "NHWC")))
  return jnp.sum(images * images)
grad = jax.jit(jax.grad(loss))
weights, images = jnp.full((3, 3, 32, 32), 0.01), jnp.ones((32, 64, 64, 32))
grad(weights, images).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  grad(weights, images).block_until_ready()
print("faults", (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
print("argv", sys.argv[1:])
"""


def _probe(**env):
  base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "FMJAX_XLA_CPU_DEFAULTS")}
  out = subprocess.run([sys.executable, "-c", _RESTART_PROBE, "a", "--b=c"],
                       env={**base, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **env},
                       capture_output=True, text=True, timeout=300, check=True).stdout
  lines = [l.split(" ", 1) for l in out.splitlines()]
  return [l[1] for l in lines if l[0] == "start"], int(dict(lines)["faults"]), dict(lines)["argv"]


def test_the_malloc_restart_keeps_the_command_and_stops_the_page_faults(monkeypatch):
  """restart_with_malloc_tunables: one restart, same arguments, GLIBC_TUNABLES set; a 128 MiB
  temporary (a small convolution net's gradient) then faults in a few huge pages per call
  instead of about 32,768 small ones. A user's GLIBC_TUNABLES, or FMJAX_XLA_CPU_DEFAULTS=0,
  means no restart (and the faults stay)."""
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("FMJAX_XLA_CPU_DEFAULTS", raising=False)
  if not xla_cpu.malloc_tunables_help():
    pytest.skip("needs Linux with glibc >= 2.35 and transparent huge pages not 'never'")
  starts, faults, argv = _probe()
  assert starts == ["None", ":".join(xla_cpu.MALLOC_TUNABLES)]
  assert argv == "['a', '--b=c']"
  mine, mine_faults, _ = _probe(GLIBC_TUNABLES="glibc.malloc.check=0")
  off, off_faults, _ = _probe(FMJAX_XLA_CPU_DEFAULTS="0")
  assert mine == ["glibc.malloc.check=0"] and off == ["None"]
  # 128 MiB in 4 KiB pages is 32,768 faults per call when the block is mapped afresh.
  assert off_faults > 20_000 and mine_faults > 20_000, (off_faults, mine_faults)
  assert faults < 2_000, faults


def _conv_oracle(x, w):
  """'SAME' 3x3 convolution in float64 by a loop over the kernel taps: x[N,H,W,C], w[3,3,C,O]."""
  n, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((n, h, wd, w.shape[-1]))
  for i in range(3):
    for j in range(3):
      out += xp[:, i:i + h, j:j + wd, :] @ w[i, j]
  return out


def test_convolution_and_its_gradients_match_float64_under_these_settings():
  """The kernels XLA_FLAGS now selects (the test session sets fmjax's settings, as the entry
  points do): forward, input gradient and weight gradient of a 3x3 convolution within 1e-5
  relative of a float64 oracle (the oracle's gradients by the adjoint of a linear map)."""
  assert "--xla_cpu_experimental_ynn_fusion_type=reduce" in os.environ["XLA_FLAGS"].split()
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 12, 12, 16)).astype(np.float32)
  w = (rng.normal(size=(3, 3, 16, 24)) * 0.2).astype(np.float32)
  g = rng.normal(size=(4, 12, 12, 24)).astype(np.float32)  # the output's cotangent
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y, vjp = jax.vjp(jax.jit(conv), jnp.asarray(x), jnp.asarray(w))
  dx, dw = vjp(jnp.asarray(g))
  x64, w64, g64 = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
  y_ref = _conv_oracle(x64, w64)
  # <g, conv(x, w)> is linear in w: its gradient's tap (i, j) is sum over pixels of
  # x-shifted outer g.
  xp = np.pad(x64, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dw_ref = np.stack([np.stack([np.einsum("nhwc,nhwo->co", xp[:, i:i + 12, j:j + 12], g64)
                               for j in range(3)]) for i in range(3)])
  dx_ref = np.zeros_like(xp)
  for i in range(3):
    for j in range(3):
      dx_ref[:, i:i + 12, j:j + 12] += g64 @ w64[i, j].T
  dx_ref = dx_ref[:, 1:-1, 1:-1]
  for got, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_group_norm_and_bias_gradients_match_float64_under_these_settings():
  """The U-Net's GroupNorm (its statistics are reductions, YNNPACK's under these settings) and
  the reduction a bias gradient is, within 1e-5 of float64."""
  from fmjax.model.unet import GroupNorm32
  rng = np.random.default_rng(1)
  x = (rng.normal(size=(4, 16, 16, 32)) * 3 + 1).astype(np.float32)
  scale = rng.normal(size=32).astype(np.float32)
  bias = rng.normal(size=32).astype(np.float32)
  params = {"params": {"norm": {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)}}}
  y = jax.jit(lambda x: GroupNorm32(8).apply(params, x))(jnp.asarray(x))
  g = x.astype(np.float64).reshape(4, 256, 8, 4)
  mean = g.mean(axis=(1, 3), keepdims=True)
  var = g.var(axis=(1, 3), keepdims=True)
  ref = ((g - mean) / np.sqrt(var + 1e-5)).reshape(4, 16, 16, 32) * scale + bias
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
  ct = rng.normal(size=x.shape).astype(np.float32)
  dbias = jax.grad(lambda b: jnp.sum((jnp.asarray(x) + b) * ct))(jnp.asarray(bias))
  np.testing.assert_allclose(np.asarray(dbias), ct.astype(np.float64).sum(axis=(0, 1, 2)),
                             rtol=1e-5, atol=1e-5 * np.abs(ct).sum(axis=(0, 1, 2)).max())

