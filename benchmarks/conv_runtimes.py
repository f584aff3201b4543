"""GFLOP/s of one 3x3 convolution (float32 in and out) on the CPU runtimes an ONNX export can
use: onnxruntime, OpenVINO in f32 and OpenVINO in bf16 (which uses the CPU's bf16 dot
instructions, AVX-512 BF16 or AMX, where it has them). Prints one JSON line per shape.

  python benchmarks/conv_runtimes.py [--shapes=4x128x128,64x32x32,8x256x32] [--repeats=5]

A shape NxCxS is N images of C channels at SxS pixels, convolved to C channels; the FLOP count
is 2 N S^2 9 C^2 and the time the best of `--repeats` runs after one untimed run. It shows what
the runtimes' convolutions can do here, apart from the rest of a U-Net (benchmarks/README.md).
"""

import argparse
import json
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_model(n: int, c: int, s: int) -> bytes:
  """An ONNX model of one 3x3 'same' convolution x[n,c,s,s] -> [n,c,s,s] with random weights."""
  rng = np.random.default_rng(0)
  weights = numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.05).astype(np.float32), "w")
  graph = helper.make_graph(
      [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, s, s])],
      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, s, s])], [weights])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8
  return model.SerializeToString()


def best_seconds(run, repeats: int) -> float:
  run()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  return min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default="4x128x128,64x32x32,8x256x32")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  import onnxruntime
  import openvino
  core = openvino.Core()
  for shape in args.shapes.split(","):
    n, c, s = (int(v) for v in shape.split("x"))
    model = conv_model(n, c, s)
    x = np.random.default_rng(1).standard_normal((n, c, s, s)).astype(np.float32)
    flops = 2 * n * s * s * 9 * c * c
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    runs = {"onnxruntime": lambda: session.run(None, {"x": x})}
    for precision in ("f32", "bf16"):
      compiled = core.compile_model(core.read_model(model=model, weights=b""), "CPU",
                                    {"INFERENCE_PRECISION_HINT": precision})
      runs[f"openvino_{precision}"] = lambda compiled=compiled: compiled({"x": x})
    row = {"benchmark": "conv_runtimes", "shape": [n, c, s, s], "gflop": round(flops / 1e9, 3),
           "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__.split("-")[0]}
    for name, run in runs.items():
      row[f"{name}_gflops"] = round(flops / best_seconds(run, args.repeats) / 1e9, 1)
    print(json.dumps(row))


if __name__ == "__main__":
  main()
