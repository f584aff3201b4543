"""The HTTP service (fmjax/serve.py): started on a free localhost port in a child process and
called with a real HTTP client (httpx); its answers equal direct scoring of the export."""

import base64
import concurrent.futures
import io
import os
import re
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from fmjax import deploy
from fmjax import main as fm_main
from fmjax.data import load_dataset

from conftest import serving, tiny_config

OVERRIDES = {"data.val_fraction": 0.25, "calibrate.false_alarm_rates": "0.5"}


def _png(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
  """(base URL, export path, test images): a tiny trained, calibrated, exported model served
  with small limits (--max-body-mb 0.05, --max-image-pixels 1000) and batches of up to 8."""
  workdir = tmp_path_factory.mktemp("run")
  config = tiny_config(**OVERRIDES)
  fm_main.run(config, str(workdir), "train_and_evaluate")
  fm_main.run(config, str(workdir), "export")
  command = [sys.executable, "-m", "fmjax.serve", str(workdir / "export"), "--max-batch", "8",
             "--max-wait-ms", "50", "--max-body-mb", "0.05", "--max-image-pixels", "1000"]
  with serving(command, workdir / "serve.log", {"JAX_PLATFORMS": "cpu"}) as url:
    dataset = load_dataset(config.data)
    images = dataset.test_images[dataset.test_classes == 0]
    yield url, workdir / "export", images


class _Client:
  """httpx's get and post with a 300 s timeout: the first /predict compiles the scorer, which
  takes many seconds on a loaded 2-core machine (httpx's default is 5 s)."""

  @staticmethod
  def get(*args, **kwargs):
    return httpx.get(*args, **{"timeout": 300, **kwargs})

  @staticmethod
  def post(*args, **kwargs):
    return httpx.post(*args, **{"timeout": 300, **kwargs})


def _metric(text: str, name: str, **labels) -> float:
  """The value of one Prometheus sample (0 when absent)."""
  want = ",".join(f'{k}="{v}"' for k, v in labels.items())
  pattern = rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
  found = re.findall(pattern, text, re.M)
  return float(found[0]) if found else 0.0


def test_one_image_a_batch_and_20_concurrent_requests_equal_direct_scoring(service):
  url, export, images = service
  direct = deploy.load(str(export))(images, "weave")
  health = _Client.get(url + "/health").json()
  assert health["categories"] == ["weave", "brushed", "tiles"] and health["image_size"] == 16
  assert health["runtime"].startswith("jax ")
  threshold = health["thresholds"]["weave"]["image"]
  # One image as the raw body, with both pictures.
  one = _Client.post(url + "/predict?category=weave&heatmap=png&mask=png", content=_png(images[0]),
                   headers={"Content-Type": "image/png"}).json()
  (answer,) = one["images"]
  assert one["threshold"] == threshold and (answer["width"], answer["height"]) == (16, 16)
  assert answer["score"] == pytest.approx(float(direct.scores[0]), rel=1e-6)
  assert answer["normalised_score"] == pytest.approx(float(direct.normalised[0]), abs=1e-9)
  assert answer["decision"] == ("anomalous" if direct.decisions[0] else "normal")
  mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"]))))
  pixel = health["thresholds"]["weave"]["pixel"]
  np.testing.assert_array_equal(mask, np.where(direct.heatmaps[0] > pixel, 255, 0))
  assert sum(r["area"] for r in answer["regions"]) == int((mask > 0).sum())
  with Image.open(io.BytesIO(base64.b64decode(answer["heatmap_png"]))) as picture:
    assert picture.size == (16, 16) and picture.mode == "RGB"
  # A batch of several files in one multipart request, category as a form field.
  files = [("images", (f"part{i}.png", _png(im), "image/png")) for i, im in enumerate(images)]
  batch = _Client.post(url + "/predict", files=files, data={"category": "weave"}).json()
  assert [a["name"] for a in batch["images"]] == [f"part{i}.png" for i in range(len(images))]
  np.testing.assert_allclose([a["score"] for a in batch["images"]], direct.scores, rtol=1e-6)
  # 20 concurrent requests of one image each: batched together, each answer its own image's.
  picks = [i % len(images) for i in range(20)]
  before = _Client.get(url + "/metrics").text
  with concurrent.futures.ThreadPoolExecutor(20) as pool:
    answers = list(pool.map(
        lambda i: _Client.post(url + "/predict?category=weave", content=_png(images[i]),
                             headers={"Content-Type": "image/png"}).json(), picks))
  for i, got in zip(picks, answers):
    assert got["images"][0]["score"] == pytest.approx(float(direct.scores[i]), rel=1e-6)
    assert got["images"][0]["decision"] == ("anomalous" if direct.decisions[i] else "normal")
  after = _Client.get(url + "/metrics").text
  calls = _metric(after, "fmjax_batch_images_count") - _metric(before, "fmjax_batch_images_count")
  images_scored = _metric(after, "fmjax_batch_images_sum") - _metric(before, "fmjax_batch_images_sum")
  assert images_scored == 20 and calls < 20  # some requests were scored together
  assert _metric(after, "fmjax_batch_images_bucket", le="8.0") == _metric(
      after, "fmjax_batch_images_count")  # never more than --max-batch 8 from one-image requests


@pytest.mark.parametrize("case,status,message", [
    ("undecodable", 400, "Cannot decode"),
    ("too large", 422, "over the service's limit of 1,000"),
    ("unknown category", 422, "Unknown category 'cables'"),
    ("no category", 422, "give category="),
    ("body too big", 413, "over --max-body-mb 0.05"),
    ("no image", 400, "No image in the request"),
    ("bad picture format", 422, "the only picture format is png"),
])
def test_bad_input_is_a_json_4xx_naming_it_and_the_service_goes_on(service, case, status, message):
  url, _, images = service
  good = _png(images[0])
  raw = {"Content-Type": "image/png"}
  send = {
      "undecodable": lambda: _Client.post(url + "/predict?category=weave", content=b"not a png",
                                        headers=raw),
      "too large": lambda: _Client.post(url + "/predict?category=weave",
                                      content=_png(np.zeros((40, 40, 3), np.uint8)), headers=raw),
      "unknown category": lambda: _Client.post(url + "/predict?category=cables", content=good,
                                             headers=raw),
      "no category": lambda: _Client.post(url + "/predict", content=good, headers=raw),
      "body too big": lambda: _Client.post(url + "/predict?category=weave",
                                         content=os.urandom(60_000), headers=raw),
      "no image": lambda: _Client.post(url + "/predict?category=weave", content=b"", headers=raw),
      "bad picture format": lambda: _Client.post(url + "/predict?category=weave&heatmap=jpg",
                                               content=good, headers=raw),
  }[case]
  response = send()
  assert response.status_code == status, response.text
  assert message in response.json()["error"]
  assert _Client.get(url + "/health").status_code == 200  # still serving
  assert _Client.post(url + "/predict?category=weave", content=good,
                    headers=raw).status_code == 200


def test_metrics_count_what_was_sent(service):
  url, _, images = service
  before = _Client.get(url + "/metrics").text
  raw = {"Content-Type": "image/png"}
  for im in images[:3]:
    assert _Client.post(url + "/predict?category=weave", content=_png(im), headers=raw).status_code == 200
  assert _Client.post(url + "/predict?category=weave", content=b"junk", headers=raw).status_code == 400
  after = _Client.get(url + "/metrics").text
  grew = lambda name, **labels: _metric(after, name, **labels) - _metric(before, name, **labels)
  assert grew("fmjax_requests_total", endpoint="/predict", status="200") == 3
  assert grew("fmjax_requests_total", endpoint="/predict", status="400") == 1
  assert grew("fmjax_request_seconds_count", endpoint="/predict") == 4
  decisions = sum(grew("fmjax_decisions_total", category="weave", decision=d)
                  for d in ("anomalous", "normal"))
  assert decisions == 3
  assert _metric(after, "fmjax_images_in_flight") == 0
