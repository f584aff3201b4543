"""`--mode=describe`: parameter count and FLOPs of the configured model, without data."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
from jax.sharding import SingleDeviceSharding

from fmjax.data import categories_of
from fmjax.models.unet import build_unet, count_params


def _num_classes(config) -> int:
  cats = categories_of(config.data)
  if cats:
    return len(cats)
  root = config.data.root
  found = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "train"))] if root and os.path.isdir(root) else []
  return max(1, len(found))


def forward_flops(model, image_size: int, batch: int = 1) -> float:
  """FLOPs of one forward pass of `batch` images from XLA's cost analysis on the CPU backend.

  The CPU backend is used on every machine: the GPU backend's analysis does not
  count convolutions that run in cuDNN.
  """
  cpu = SingleDeviceSharding(jax.devices("cpu")[0])
  x = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32, sharding=cpu)
  t = jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=cpu)
  lab = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=cpu)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), jnp.zeros(t.shape),
                                             jnp.zeros(lab.shape, jnp.int32)))["params"]
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=cpu), params)
  apply = lambda p, x, t, lab: model.apply({"params": p}, x, t, lab)
  cost = jax.jit(apply).lower(params, x, t, lab).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"])


def describe(config) -> dict:
  """Prints and returns parameters, FLOPs per forward and per scored image at K x T."""
  num_classes = _num_classes(config)
  model = build_unet(config.model, num_classes)
  size = config.data.image_size
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                             jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)))
  params = count_params(shapes["params"])
  flops = forward_flops(model, size)
  k, t = config.evaluate.num_seeds, config.evaluate.num_times
  info = {"parameters": params, "num_classes": num_classes, "image_size": size,
          "flops_per_forward": flops, "num_seeds": k, "num_times": t,
          "flops_per_scored_image": flops * k * t,
          "devices": [str(d) for d in jax.devices()]}
  print(f"parameters:             {params:,} ({num_classes} classes + null label)")
  print(f"FLOPs per forward:      {flops / 1e9:.2f} GFLOP at {size}x{size} (XLA cost analysis, CPU backend)")
  print(f"FLOPs per scored image: {flops * k * t / 1e12:.3f} TFLOP at K={k}, T={t} ({k * t} forwards)")
  print(json.dumps(info))
  return info
