"""`--mode=describe`: parameter count and FLOPs of the configured model, without data.

FLOPs come from XLA's cost analysis of the program lowered for the CPU backend
(see `cpu_flops`); the benchmarks compute achieved TFLOP/s from the same counts.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
from jax.sharding import SingleDeviceSharding

from fmjax import methods
from fmjax.core import console
from fmjax.data import NormStats, categories_of
from fmjax.model.unet import build_unet, count_params, init_params
from fmjax.model.optim import build_optimizer


def num_classes_of(config) -> int:
  """The configured dataset's number of categories, without reading any image."""
  cats = categories_of(config.data)
  if cats:
    return len(cats)
  root = config.data.root
  found = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "train"))] if root and os.path.isdir(root) else []
  return max(1, len(found))


def _on_cpu(tree):
  """ShapeDtypeStructs of `tree` placed on the first CPU device."""
  cpu = SingleDeviceSharding(jax.devices("cpu")[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), tree)


def cpu_flops(fn, *abstract_args) -> float:
  """FLOPs of `fn(*abstract_args)`: XLA's cost analysis of the program lowered for the CPU.

  The unoptimised program is analysed (what the model asks for, before XLA fuses
  or duplicates work), so the count is exactly linear in the batch and needs no
  compilation. It is lowered for the CPU on every machine: on the GPU, cuDNN
  calls are not counted. Loops (scan, while) would be counted once, so pass
  loop-free functions.
  """
  cost = jax.jit(fn).lower(*_on_cpu(abstract_args)).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"])


def _cpu_model(model):
  """The same model with XLA attention (cuDNN attention cannot compile for the CPU)."""
  return model.clone(attention_impl=None)


def _abstract_inputs(batch: int, image_size: int):
  return (jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32),
          jax.ShapeDtypeStruct((batch,), jnp.float32), jax.ShapeDtypeStruct((batch,), jnp.int32))


def forward_flops(model, image_size: int, batch: int = 1) -> float:
  """FLOPs of one forward pass of `batch` images (XLA cost analysis on the CPU backend)."""
  model = _cpu_model(model)
  x, t, lab = _abstract_inputs(batch, image_size)
  params = jax.eval_shape(lambda: init_params(model, jax.random.key(0), (image_size, image_size, 3)))
  return cpu_flops(lambda p, x, t, lab: model.apply({"params": p}, x, t, lab), params, x, t, lab)


def train_step_flops(model, optimizer, batch: int, image_size: int, ema_decay: float = 0.0,
                     objective: str = "cfm", objective_options: dict | None = None) -> float:
  """FLOPs of one training step on `batch` images (the objective's loss, gradient, optimiser
  update, EMA)."""
  from fmjax.train import loop as train  # pylint: disable=g-import-not-at-top
  model = _cpu_model(model)
  state = jax.eval_shape(lambda k: train.create_train_state(
      model, optimizer, (image_size, image_size, 3), model.num_classes, k, ema_decay > 0),
      jax.random.key(0))
  step = train.train_step_fn(model, optimizer, NormStats((0.5,) * 3, (0.25,) * 3), 0, ema_decay,
                             objective, objective_options)
  return cpu_flops(step, state, jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.uint8),
                   jax.ShapeDtypeStruct((batch,), jnp.int32))


def describe(config) -> dict:
  """Prints and returns parameters, FLOPs per forward, per scored image (the configured
  method's forward passes) and per train step (the configured objective)."""
  num_classes = num_classes_of(config)
  model = build_unet(config.model, num_classes)
  size = config.data.image_size
  params = count_params(jax.eval_shape(lambda: init_params(model, jax.random.key(0),
                                                          (size, size, 3))))
  flops = forward_flops(model, size)
  scorer = methods.scorer(config.evaluate.method)
  settings = methods.scorer_options(config.evaluate)
  forwards = scorer.forwards(settings)
  batch = config.train.batch_size
  step_flops = train_step_flops(model, build_optimizer(config.train), batch, size,
                                config.train.ema_decay, config.train.objective,
                                methods.objective_options(config.train))
  info = {"parameters": params, "num_classes": num_classes, "image_size": size,
          "flops_per_forward": flops, "method": scorer.name, "method_options": settings,
          "forwards_per_scored_image": forwards, "flops_per_scored_image": flops * forwards,
          "objective": config.train.objective, "train_batch_size": batch,
          "flops_per_train_step": step_flops,
          "devices": [str(d) for d in jax.devices()]}
  console.say(
      f"parameters:             {params:,} ({num_classes} classes + null label)",
      f"FLOPs per forward:      {flops / 1e9:.2f} GFLOP at {size}x{size} (XLA cost analysis)",
      f"FLOPs per scored image: {flops * forwards / 1e12:.3f} TFLOP with {scorer.title} "
      f"({scorer.summary(settings)}: {forwards:g} forwards)",
      f"FLOPs per train step:   {step_flops / 1e12:.3f} TFLOP at batch {batch}, "
      f"{methods.objective(config.train.objective).title} "
      f"({step_flops / batch / 1e9:.1f} GFLOP per image: forward, backward, update)",
      json.dumps(info))
  return info
