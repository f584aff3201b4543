"""An HTTP service for an exported scorer (`--mode=export`), on FastAPI and uvicorn.

  python -m fmjax.serve <export dir> [--host 127.0.0.1] [--port 8000] [--max-batch 16]
                        [--max-wait-ms 10] [--max-body-mb 20]

It listens on 127.0.0.1 (this machine only) unless --host says otherwise.

  POST /predict?category=C[&heatmap=png][&mask=png]
      one or several images as multipart/form-data files (any field name; `category` may also
      be a form field), or one image as the raw request body (Content-Type image/*, or
      application/octet-stream). Files are read at the size training read them (the export's
      data.resize). Returns {"category", "threshold", "threshold_kind", "images": [{"name",
      "width", "height", "score", "normalised_score", "decision", "regions"[, "heatmap_png",
      "mask_png"]}]}; the pictures are base64 PNG (the heatmap over the image, as scored; the
      predicted-defect mask, 0 or 255, at the file's size). `normalised_score` and `decision`
      are null without a calibrated threshold, `regions` without a pixel threshold.
  GET /health      the export: method, checkpoint step, categories, image size, tile, thresholds
  GET /metrics     Prometheus text: requests by endpoint and status, request latency, decisions
                   by category, images in flight, images per scoring call

Requests arriving together are scored together: the batcher takes up to --max-batch images,
waiting at most --max-wait-ms after the first, and scores them category by category on one
worker thread (the scorer's seeds come from each image's pixels, so batching never changes a
score). Bad input gets a JSON 4xx {"error": ...} and the service goes on: 400 no image or an
undecodable one, 413 a body over --max-body-mb, 422 an unknown or missing category or an
image over --max-image-pixels.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request,
# defined inside make_app) as objects.
import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import io
import sys
import time

import numpy as np

from fmjax.core import console


class BadInput(Exception):
  """A request the service refuses: its HTTP status and a message naming the problem."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


@dataclasses.dataclass
class _Job:
  images: list  # uint8 [H_i,W_i,3]
  category: str
  done: asyncio.Future


class Batcher:
  """Collects concurrent requests' images into batches of up to `max_batch` (waiting at most
  `max_wait_s` after the first) and scores each category's images in one call of `score`
  (images, category) -> deploy.Scored, on one worker thread."""

  def __init__(self, score, max_batch: int, max_wait_s: float, on_batch=None):
    self.score, self.max_batch, self.max_wait_s = score, max_batch, max_wait_s
    self.on_batch = on_batch  # called with the number of images of every scoring call
    self.queue: asyncio.Queue | None = None
    self.worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fmjax-score")

  async def submit(self, images: list, category: str):
    """Per image: (score, normalised or None, decision or None, heatmap), in order."""
    job = _Job(images, category, asyncio.get_running_loop().create_future())
    await self.queue.put(job)
    return await job.done

  async def run(self) -> None:
    self.queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    while True:
      jobs = [await self.queue.get()]
      count, deadline = len(jobs[0].images), loop.time() + self.max_wait_s
      while count < self.max_batch:
        try:
          job = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
          break
        jobs.append(job)
        count += len(job.images)
      for category in dict.fromkeys(j.category for j in jobs):  # in arrival order
        mine = [j for j in jobs if j.category == category]
        images = [im for j in mine for im in j.images]
        try:
          result = await loop.run_in_executor(self.worker, self.score, images, category)
        except Exception as e:  # pylint: disable=broad-except  (the requests get the error)
          for j in mine:
            j.done.set_exception(e)
          continue
        if self.on_batch is not None:
          self.on_batch(len(images))
        start = 0
        for j in mine:
          rows = []
          for i in range(start, start + len(j.images)):
            rows.append((float(result.scores[i]),
                         None if result.normalised is None else float(result.normalised[i]),
                         None if result.decisions is None else bool(result.decisions[i]),
                         result.heatmaps[i]))
          start += len(j.images)
          j.done.set_result(rows)


def _header_size(data: bytes) -> tuple[int, int]:
  """(width, height) from an image file's header, without decoding it; (0, 0) when the header
  cannot be read (decoding then says what is wrong)."""
  from PIL import Image
  try:
    with Image.open(io.BytesIO(data)) as im:
      return im.size
  except Exception:  # pylint: disable=broad-except  (any unreadable header: decoding reports it)
    return 0, 0


def _png(array: np.ndarray) -> str:
  """A uint8 [H,W] or [H,W,3] array as base64 PNG text."""
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return base64.b64encode(buffer.getvalue()).decode("ascii")


def make_app(scorer, max_batch: int = 16, max_wait_ms: float = 10.0, max_body_mb: float = 20.0,
             max_image_pixels: int = 50_000_000):
  """The FastAPI application serving `scorer` (a `fmjax.deploy.Scorer`); module docstring."""
  from fastapi import FastAPI, Request
  from fastapi.responses import JSONResponse, Response
  from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                                 Histogram, generate_latest)
  from starlette.concurrency import run_in_threadpool
  from starlette.datastructures import UploadFile
  from starlette.formparsers import MultiPartException, MultiPartParser

  from fmjax.core import plots
  from fmjax.data.decode import read_image_and_size
  from fmjax.deploy import DeployError

  manifest = scorer.manifest
  resize = manifest.get("resize", "square")
  max_body = int(max_body_mb * 1024 * 1024)
  registry = CollectorRegistry()
  batch_sizes = Histogram("fmjax_batch_images", "Images per scoring call", registry=registry,
                          buckets=(1, 2, 4, 8, 16, 32, 64, 128))
  batcher = Batcher(scorer, max_batch, max_wait_ms / 1000.0, batch_sizes.observe)
  requests = Counter("fmjax_requests", "HTTP requests by endpoint and status",
                     ["endpoint", "status"], registry=registry)
  latency = Histogram("fmjax_request_seconds", "Request latency (s) by endpoint", ["endpoint"],
                      registry=registry,
                      buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
  decided = Counter("fmjax_decisions", "Scored images by category and decision",
                    ["category", "decision"], registry=registry)
  in_flight = Gauge("fmjax_images_in_flight", "Images received and not yet answered",
                    registry=registry)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    task = asyncio.create_task(batcher.run())
    yield
    task.cancel()
    batcher.worker.shutdown(wait=False, cancel_futures=True)

  app = FastAPI(title="fmjax", lifespan=lifespan)
  app.state.batcher = batcher

  @app.middleware("http")
  async def count(request: Request, call_next):
    t0 = time.perf_counter()
    response = await call_next(request)
    endpoint = request.url.path if request.url.path in ("/predict", "/health", "/metrics") else "other"
    requests.labels(endpoint, str(response.status_code)).inc()
    latency.labels(endpoint).observe(time.perf_counter() - t0)
    return response

  @app.exception_handler(BadInput)
  async def refuse(request: Request, e: BadInput):
    return JSONResponse({"error": str(e)}, status_code=e.status)

  async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
      raise BadInput(413, f"The body is {int(declared):,} bytes, over --max-body-mb "
                          f"{max_body_mb:g} ({max_body:,} bytes).")
    chunks, size = [], 0
    async for chunk in request.stream():
      size += len(chunk)
      if size > max_body:
        raise BadInput(413, f"The body is over --max-body-mb {max_body_mb:g} ({max_body:,} bytes).")
      chunks.append(chunk)
    return b"".join(chunks)

  async def uploads(request: Request, body: bytes) -> tuple[list[tuple[str, bytes]], str | None]:
    """[(name, bytes)] of the request's images and the form's category field (if any)."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
      async def once():
        yield body
      try:
        form = await MultiPartParser(request.headers, once(), max_files=max(1000, max_batch),
                                     max_fields=100).parse()
      except MultiPartException as e:
        raise BadInput(400, f"Cannot read the multipart body: {e}") from e
      files = [(v.filename or k, await v.read()) for k, v in form.multi_items()
               if isinstance(v, UploadFile)]
      category = form.get("category")
      return files, category if isinstance(category, str) else None
    if not body:
      return [], None
    if kind and not (kind.startswith("image/") or kind.startswith("application/octet-stream")):
      raise BadInput(400, f"Send images as multipart/form-data files or as a raw image body "
                          f"(Content-Type image/* or application/octet-stream), not {kind!r}.")
    return [("body", body)], None

  def decode(files: list[tuple[str, bytes]]) -> list[tuple[np.ndarray, tuple[int, int]]]:
    out = []
    for name, data in files:
      if not data:
        raise BadInput(400, f"The image {name!r} is empty.")
      w, h = _header_size(data)  # before decoding: a huge image is refused without its pixels
      if max_image_pixels and w * h > max_image_pixels:
        raise BadInput(422, f"The image {name!r} is {w}x{h} ({w * h:,} pixels), over the "
                            f"service's limit of {max_image_pixels:,} (--max-image-pixels).")
      try:
        image, (w, h) = read_image_and_size(io.BytesIO(data), scorer.image_size, resize, name=name)
      except ValueError as e:  # CorruptImageError
        raise BadInput(400, str(e)) from e
      if max_image_pixels and image.shape[0] * image.shape[1] > max_image_pixels:
        raise BadInput(422, f"The image {name!r} is read at {image.shape[1]}x{image.shape[0]}, "
                            f"over the service's limit of {max_image_pixels:,} pixels.")
      out.append((image, (w, h)))
    return out

  @app.post("/predict")
  async def predict(request: Request, category: str | None = None, heatmap: str | None = None,
                    mask: str | None = None):
    for name, value in (("heatmap", heatmap), ("mask", mask)):
      if value not in (None, "png"):
        raise BadInput(422, f"{name}={value!r}: the only picture format is png.")
    body = await read_body(request)
    files, form_category = await uploads(request, body)
    if not files:
      raise BadInput(400, "No image in the request: send files as multipart/form-data or one "
                          "image as the raw body.")
    category = category or form_category
    try:
      category = scorer.resolve_category(category)
    except DeployError as e:
      raise BadInput(422, str(e)) from e
    decoded = await run_in_threadpool(decode, files)
    in_flight.inc(len(decoded))
    try:
      rows = await batcher.submit([image for image, _ in decoded], category)
    except DeployError as e:
      raise BadInput(422, str(e)) from e
    finally:
      in_flight.dec(len(decoded))
    entry = manifest["thresholds"].get(category, {})
    pixel = entry.get("pixel")
    answers = []
    for (name, _), (image, (w, h)), (score, normalised, flag, heat) in zip(files, decoded, rows):
      word = None if flag is None else ("anomalous" if flag else "normal")
      decided.labels(category, word or "undecided").inc()
      defect, described = await run_in_threadpool(scorer.defects, heat, category, h, w)
      answer = {"name": name, "width": w, "height": h, "score": score,
                "normalised_score": normalised, "decision": word, "regions": described}
      if heatmap == "png":
        from matplotlib.colors import Normalize
        scale = Normalize(0.0, pixel, clip=True) if pixel else plots.heat_scale(heat)
        answer["heatmap_png"] = _png(plots.overlay(image, heat, scale))
      if mask == "png":
        answer["mask_png"] = None if defect is None else _png(defect.astype(np.uint8) * 255)
      answers.append(answer)
    return {"category": category, "threshold": entry.get("image"),
            "threshold_kind": entry.get("kind", ""), "images": answers}

  @app.get("/health")
  async def health():
    return {"status": "ok", "export": scorer.path, "format": scorer.format,
            "runtime": scorer.tiles.runtime,
            "method": manifest["method"],
            "checkpoint_step": manifest["checkpoint_step"],
            "checkpoint": manifest.get("checkpoint"), "categories": scorer.class_names,
            "image_size": scorer.image_size, "resize": resize, "tile_size": scorer.tile_size,
            "thresholds": manifest["thresholds"], "max_batch": max_batch,
            "max_wait_ms": max_wait_ms, "max_body_mb": max_body_mb}

  @app.get("/metrics")
  async def metrics():
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

  return app


def main(argv=None) -> int:
  console.route_warnings()
  from fmjax import deploy
  parser = argparse.ArgumentParser(prog="python -m fmjax.serve", description=__doc__.split("\n")[0])
  parser.add_argument("export_dir")
  parser.add_argument("--host", default="127.0.0.1",
                      help="the address to listen on (default 127.0.0.1: this machine only)")
  parser.add_argument("--port", type=int, default=8000)
  parser.add_argument("--max-batch", type=int, default=16, help="images scored together, at most")
  parser.add_argument("--max-wait-ms", type=float, default=10.0,
                      help="how long the first image of a batch waits for others")
  parser.add_argument("--max-body-mb", type=float, default=20.0, help="the largest request body")
  parser.add_argument("--max-image-pixels", type=int, default=50_000_000,
                      help="the largest image (width x height; 0: no limit)")
  parser.add_argument("--runtime", default="onnxruntime", choices=deploy.RUNTIMES,
                      help="what runs an ONNX export (default onnxruntime)")
  parser.add_argument("--precision", default="f32", choices=deploy.OPENVINO_PRECISIONS,
                      help="OpenVINO's compute precision (bf16 where the CPU has bf16 instructions)")
  args = parser.parse_args(argv)
  problems = [f"--{k.replace('_', '-')} must be > 0" for k in ("max_batch", "max_body_mb")
              if getattr(args, k) <= 0] + (["--max-wait-ms must be >= 0"] if args.max_wait_ms < 0 else [])
  if problems:
    console.error("; ".join(problems), prog="fmjax.serve")
    return 2
  try:
    scorer = deploy.load(args.export_dir, runtime=args.runtime, precision=args.precision)
  except (deploy.DeployError, OSError, ValueError) as e:
    console.error(str(e), prog="fmjax.serve")
    return 1
  console.say(scorer.describe())
  stale = deploy.stale_export(args.export_dir, scorer.manifest)
  if stale:
    console.warn(stale)
  import uvicorn
  scorer.warm_up()  # every batch shape compiled before the first request
  app = make_app(scorer, args.max_batch, args.max_wait_ms, args.max_body_mb, args.max_image_pixels)
  console.say(f"Serving {args.export_dir} ({', '.join(scorer.class_names)}) on "
              f"http://{args.host}:{args.port} (POST /predict, GET /health, GET /metrics)")
  uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
  return 0


if __name__ == "__main__":
  sys.exit(main())
