"""Latency of an exported scorer on a line: direct calls and the HTTP service, 1 to 16 clients.

  python benchmarks/serve_latency.py --export runs/bottle/export \\
      --images ../shared/data/mvtec/bottle/test --category bottle --clients 1,4,16

For each export (comma-separated: a StableHLO and an ONNX export of one model, say) and each
number of concurrent clients C, C threads each send `--requests` one-image requests, one after
another, (1) directly to `fmjax.deploy.load(export)` in this process and (2) as PNG bodies to
`python -m fmjax.serve` started on a free 127.0.0.1 port (`--max-batch`, `--max-wait-ms`).
Prints one JSON line per (export, target, C): p50/p95/p99 of the request latency in ms and
images/s (requests over the wall time of the level). A warm-up round (compilation, sessions)
comes first and is not counted. Latencies include decoding the PNG for the service and not for
direct calls (those take decoded arrays).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fmjax import deploy  # noqa: E402
from fmjax.data.decode import IMAGE_EXTENSIONS, read_image  # noqa: E402


def _level(call, inputs, clients: int, requests: int) -> dict:
  """Runs `clients` threads of `requests` calls each; latency percentiles (ms) and images/s."""
  def client(c):
    out = []
    for r in range(requests):
      t0 = time.perf_counter()
      call(inputs[(c * requests + r) % len(inputs)])
      out.append(time.perf_counter() - t0)
    return out

  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(clients) as pool:
    latencies = np.concatenate(list(pool.map(client, range(clients))))
  wall = time.perf_counter() - start
  p50, p95, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 95, 99))
  return {"clients": clients, "requests": int(latencies.size), "p50_ms": round(p50, 1),
          "p95_ms": round(p95, 1), "p99_ms": round(p99, 1),
          "images_per_s": round(latencies.size / wall, 2)}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _service(export: str, args):
  """(base URL, the child process) of `python -m fmjax.serve` on a free localhost port."""
  import httpx
  port = _free_port()
  child = subprocess.Popen([sys.executable, "-m", "fmjax.serve", export, "--port", str(port),
                            "--max-batch", str(args.max_batch), "--max-wait-ms",
                            str(args.max_wait_ms)], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": REPO})
  url = f"http://127.0.0.1:{port}"
  for _ in range(1200):
    try:
      if httpx.get(url + "/health", timeout=1).status_code == 200:
        return url, child
    except httpx.TransportError:
      pass
    if child.poll() is not None:
      raise SystemExit(f"fmjax.serve {export} exited with {child.returncode}")
    time.sleep(0.1)
  child.terminate()
  raise SystemExit(f"fmjax.serve {export} did not answer /health in 120 s")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--export", required=True, help="export folders, comma-separated")
  parser.add_argument("--images", required=True, help="a folder (searched recursively)")
  parser.add_argument("--category", default=None)
  parser.add_argument("--clients", default="1,4,16")
  parser.add_argument("--requests", type=int, default=8, help="requests per client and level")
  parser.add_argument("--max-batch", type=int, default=16)
  parser.add_argument("--max-wait-ms", type=float, default=10.0)
  parser.add_argument("--targets", default="direct,service")
  args = parser.parse_args()
  import httpx
  from PIL import Image
  levels = [int(c) for c in args.clients.split(",")]
  paths = sorted(p for p in glob.glob(os.path.join(args.images, "**", "*"), recursive=True)
                 if p.lower().endswith(IMAGE_EXTENSIONS))
  for export in args.export.split(","):
    scorer = deploy.load(export)
    images = [read_image(p, scorer.image_size) for p in paths[:64]]
    pngs = []
    for image in images:
      buffer = io.BytesIO()
      Image.fromarray(image).save(buffer, format="PNG")
      pngs.append(buffer.getvalue())
    common = {"benchmark": "serve_latency", "export": export, "format": scorer.format,
              "method_options": scorer.manifest["method_options"], "image_size": scorer.image_size,
              "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine()}
    targets = args.targets.split(",")
    if "direct" in targets:
      call = lambda image: scorer([image], args.category)
      _level(call, images, 1, 2)  # warm-up: compilation
      for clients in levels:
        print(json.dumps({**common, "target": "direct", **_level(call, images, clients,
                                                                 args.requests)}), flush=True)
    if "service" in targets:
      url, child = _service(export, args)
      try:
        query = f"{url}/predict" + (f"?category={args.category}" if args.category else "")
        def call(body):
          answer = httpx.post(query, content=body, headers={"Content-Type": "image/png"},
                              timeout=600)
          answer.raise_for_status()
        _level(call, pngs, 1, 2)
        for clients in levels:
          print(json.dumps({**common, "target": "service", "max_batch": args.max_batch,
                            "max_wait_ms": args.max_wait_ms,
                            **_level(call, pngs, clients, args.requests)}), flush=True)
      finally:
        child.terminate()
        child.wait(timeout=60)


if __name__ == "__main__":
  main()
