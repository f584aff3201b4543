"""eval/report.html in a real headless browser: Debian's Chromium driven through selenium.

An evaluation of a tiny model (3 synthetic categories, 12 test images each, calibrated on
held-out normals) is made once; the tests open file://.../report.html and check, through the
DOM, what the page shows against metrics.json, metrics.md and oracles computed here.
"""

import json
import math
import pathlib
import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from fmjax import main as fm_main
from fmjax.report import page
from tiny import tiny_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _config(**extra):
  return tiny_config(**{"data.val_fraction": 0.25, "data.synthetic.num_train": 16,
                        "data.synthetic.num_test_normal": 6,
                        "data.synthetic.num_test_anomalous": 6,
                        "calibrate.false_alarm_rates": "0.25,0.01", **extra})


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
  run = tmp_path_factory.mktemp("page") / "run"
  config = _config()
  fm_main.run(config, str(run), "train")
  fm_main.run(config, str(run), "calibrate")
  fm_main.run(config, str(run), "evaluate")
  eval_dir = run / "eval"
  return eval_dir, json.loads((eval_dir / "metrics.json").read_text())


def chromium_available() -> bool:
  return pathlib.Path(CHROMIUM).exists() and pathlib.Path(CHROMEDRIVER).exists()


def start_browser():
  """Headless Chromium, offline, logging the console and the network."""
  webdriver = pytest.importorskip("selenium.webdriver")
  from selenium.webdriver.chrome.options import Options
  from selenium.webdriver.chrome.service import Service
  if not chromium_available():
    pytest.skip("Chromium and ChromeDriver not found (.ci/run installs Debian's chromium and "
                "chromium-driver)")
  options = Options()
  options.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000"):
    options.add_argument(arg)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
  return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.fixture(scope="module")
def browser():
  driver = start_browser()
  yield driver
  driver.quit()


def open_page(driver, path) -> float:
  """Loads file://`path` and waits for the page's ready mark; returns the seconds it took."""
  started = time.perf_counter()
  driver.get(pathlib.Path(path).resolve().as_uri())
  while driver.execute_script("return document.documentElement.dataset.ready") != "true":
    assert time.perf_counter() - started < 60, "the page never became ready"
    time.sleep(0.02)
  return time.perf_counter() - started


@pytest.fixture
def report(browser, evaluation):
  eval_dir, metrics = evaluation
  open_page(browser, eval_dir / "report.html")
  browser.get_log("browser")  # start each test's console log afresh
  return browser, eval_dir, metrics


def percent(v):
  return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def category_scores(metrics, name):
  return [(im["score"], im["label"]) for im in metrics["images"] if im["category"] == name]


def stats(driver, ci):
  return {e.get_attribute("data-stat"): e.text for e in
          driver.find_elements("css selector", f"#cat-{ci} [data-stat]")}


def set_slider(driver, ci, k):
  driver.execute_script(
      "const s = document.querySelector(arguments[0]); s.value = arguments[1];"
      "s.dispatchEvent(new Event('input'));", f"#cat-{ci} input.threshold", k)


def test_metrics_table_equals_metrics_json(report):
  driver, _, metrics = report
  rows = driver.find_elements("css selector", "#metrics-table tbody tr")
  header = [th.text for th in driver.find_elements("css selector", "#metrics-table thead th")]
  keys = {"I-AUROC": "image_auroc", "I-AP": "image_ap", "I-F1max": "image_f1_max",
          "P-AUROC": "pixel_auroc", "P-AP": "pixel_ap", "P-F1max": "pixel_f1_max",
          "PRO": "pixel_aupro", "AUPIMO": "pixel_aupimo"}
  assert header == ["Category"] + list(keys)
  names = [r.get_attribute("data-category") for r in rows]
  assert names == list(metrics["per_category"]) + ["Mean"]
  for row, name in zip(rows, names):
    source = metrics["mean"] if name == "Mean" else metrics["per_category"][name]
    cells = [td.text for td in row.find_elements("css selector", "td")]
    assert cells == [name] + [percent(source[keys[h]]) for h in header[1:]], name
  settings = dict(zip(*[[e.text for e in driver.find_elements("css selector", f"#settings {t}")]
                        for t in ("th", "td")]))
  assert settings["K (seeds)"] == "2" and settings["T (time steps)"] == "2"
  assert settings["checkpoint step"] == str(metrics["settings"]["checkpoint_step"])
  assert settings["aggregator"] == "min" and "parameters" in settings["model"]


def test_one_card_per_test_image_and_sorting_by_score(report):
  from selenium.webdriver.support.ui import Select
  driver, _, metrics = report
  cards = driver.find_elements("css selector", ".card")
  assert len(cards) == len(metrics["images"]) == 36
  for ci, name in enumerate(metrics["per_category"]):
    expected = sorted(s for s, _ in category_scores(metrics, name))
    Select(driver.find_element("css selector", f"#cat-{ci} select[data-control=sort]")) \
        .select_by_value("score-desc")
    shown = [float(c.get_attribute("data-score")) for c in
             driver.find_elements("css selector", f"#cat-{ci} .gallery .card")]
    assert shown == expected[::-1]
    Select(driver.find_element("css selector", f"#cat-{ci} select[data-control=sort]")) \
        .select_by_value("score-asc")
    shown = [float(c.get_attribute("data-score")) for c in
             driver.find_elements("css selector", f"#cat-{ci} .gallery .card")]
    assert shown == expected


def calibrated_table(eval_dir):
  """{(category, rate text): (false alarms, recall)} from metrics.md's decisions table."""
  text = (eval_dir / "metrics.md").read_text()
  section = text.split("## Decisions without test labels", 1)[1]
  out, category = {}, None
  for line in section.splitlines():
    if not line.startswith("| ") or line.startswith("| Category"):
      continue
    cells = [c.strip() for c in line.strip("|").split("|")]
    category = cells[0] or category
    out[(category, cells[2])] = (cells[4], cells[5], cells[3])
  return out


def test_slider_at_the_calibrated_and_f1_thresholds_shows_the_reports_figures(report):
  driver, eval_dir, metrics = report
  table = calibrated_table(eval_dir)
  assert len(table) == 3 * 3  # two rates and the F1-optimal row per category
  for ci, name in enumerate(metrics["per_category"]):
    distinct = sorted({s for s, _ in category_scores(metrics, name)})
    buttons = driver.find_elements("css selector", f"#cat-{ci} button.jump")
    calibrated = [b for b in buttons if b.get_attribute("data-kind") == "calibrated"]
    assert len(calibrated) == 2
    for button, rate in zip(calibrated, ("25% false alarms", "1% false alarms")):
      threshold = float(button.get_attribute("data-threshold"))
      button.click()
      k = int(driver.find_element("css selector", f"#cat-{ci} input.threshold")
              .get_attribute("value"))
      assert k == sum(s <= threshold for s in distinct)  # flagged: score > threshold
      key = next(key for key in table if key[0] == name and key[1].startswith(rate))
      far, recall, stated = table[key]
      assert f"{threshold:.4g}" == stated
      shown = stats(driver, ci)
      assert (shown["far"], shown["recall"]) == (far, recall), (name, rate)
    f1 = next(b for b in buttons if b.get_attribute("data-kind") == "f1")
    f1.click()
    t = metrics["per_category"][name]["image_f1_threshold"]
    assert float(f1.get_attribute("data-threshold")) == t
    k = int(driver.find_element("css selector", f"#cat-{ci} input.threshold").get_attribute("value"))
    assert k == sum(s < t for s in distinct)  # flagged: score >= threshold
    assert stats(driver, ci)["f1"] == percent(metrics["per_category"][name]["image_f1_max"])


def test_every_slider_position_matches_an_oracle(report):
  driver, _, metrics = report
  for ci, name in enumerate(metrics["per_category"]):
    pairs = category_scores(metrics, name)
    distinct = sorted({s for s, _ in pairs})
    for k in range(len(distinct) + 1):
      set_slider(driver, ci, k)
      flagged = [(s >= distinct[k]) if k < len(distinct) else False for s, _ in pairs]
      tp = sum(f and lab == 1 for f, (_, lab) in zip(flagged, pairs))
      fp = sum(f and lab == 0 for f, (_, lab) in zip(flagged, pairs))
      pos = sum(lab for _, lab in pairs)
      neg = len(pairs) - pos
      shown = stats(driver, ci)
      assert shown["tp"] == str(tp) and shown["fp"] == str(fp)
      assert shown["fn"] == str(pos - tp) and shown["tn"] == str(neg - fp)
      assert shown["far"] == percent(fp / neg) and shown["recall"] == percent(tp / pos)
      precision = tp / (tp + fp) if tp + fp else None
      assert shown["precision"] == percent(precision)
      f1 = None if precision is None else (
          2 * precision * (tp / pos) / max(precision + tp / pos, 1e-300))
      assert shown["f1"] == percent(f1)
      cards = driver.find_elements("css selector", f"#cat-{ci} .card.flagged")
      assert len(cards) == tp + fp


def test_filters_and_the_large_view(report):
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import Select
  driver, _, metrics = report
  name = next(iter(metrics["per_category"]))
  pairs = category_scores(metrics, name)
  Select(driver.find_element("css selector", "#cat-0 select[data-control=label]")).select_by_value("1")
  visible = [c for c in driver.find_elements("css selector", "#cat-0 .card") if c.is_displayed()]
  assert len(visible) == sum(lab for _, lab in pairs)
  assert {c.get_attribute("data-label") for c in visible} == {"1"}
  Select(driver.find_element("css selector", "#cat-0 select[data-control=label]")).select_by_value("")
  defects = sorted({im["defect"] for im in metrics["images"] if im["category"] == name})
  Select(driver.find_element("css selector", "#cat-0 select[data-control=defect]")) \
      .select_by_value(defects[-1])
  visible = [c for c in driver.find_elements("css selector", "#cat-0 .card") if c.is_displayed()]
  assert len(visible) == sum(im["defect"] == defects[-1] for im in metrics["images"]
                             if im["category"] == name)
  Select(driver.find_element("css selector", "#cat-0 select[data-control=defect]")).select_by_value("")
  set_slider(driver, 0, 0)  # everything flagged
  Select(driver.find_element("css selector", "#cat-0 select[data-control=decision]")) \
      .select_by_value("passed")
  assert not [c for c in driver.find_elements("css selector", "#cat-0 .card") if c.is_displayed()]
  Select(driver.find_element("css selector", "#cat-0 select[data-control=decision]")).select_by_value("")
  card = driver.find_element("css selector", "#cat-0 .card")
  driver.execute_script("arguments[0].scrollIntoView()", card)
  card.click()
  large = driver.find_element("id", "large")
  assert large.is_displayed() and len(large.find_elements("css selector", "canvas")) == 2
  driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
  assert not large.is_displayed()


def _canvas_pixels(driver, card, drawn=lambda pixels: pixels[..., 3].any()):
  """RGBA bytes [H,W,4] of a card's canvas, once `drawn(pixels)` holds (default: anything is
  drawn), or as they are after 10 s. The page draws a card's picture and its outlines as
  their images decode, so a test waits for what it looks at."""
  driver.execute_script("arguments[0].scrollIntoView()", card)
  deadline = time.time() + 10
  while True:
    data = driver.execute_script(
        "const c = arguments[0].querySelector('canvas');"
        "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];",
        card)
    pixels = np.array(data[2], np.uint8).reshape(data[1], data[0], 4)
    if drawn(pixels) or time.time() > deadline:
      return pixels
    time.sleep(0.05)


def _lime(pixels):
  """Where a canvas is pure lime (the ground truth's outline)."""
  return np.all(pixels[..., :3] == (0, 255, 0), axis=-1)


def test_cards_draw_the_ground_truth_and_the_overlay(report):
  driver, _, metrics = report
  index = next(i for i, im in enumerate(metrics["images"]) if im["label"] == 1)
  card = driver.find_element("css selector", f".card[data-index='{index}']")
  drawn = _canvas_pixels(driver, card, lambda pixels: _lime(pixels).sum() > 10)
  assert _lime(drawn).sum() > 10  # the ground truth's outline
  box = card.find_element("xpath", "ancestor::section").find_element(
      "css selector", "input[data-control=overlay]")
  box.click()  # overlay off: the image as it is
  time.sleep(0.3)
  plain = _canvas_pixels(driver, card)
  assert np.abs(plain.astype(int) - drawn.astype(int)).max() > 30
  box.click()


def test_no_console_errors_no_requests_and_a_screenshot(report, tmp_path):
  driver, eval_dir, _ = report
  driver.find_element("css selector", "#cat-0 .card").click()  # draws the large view too
  time.sleep(0.5)
  errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
  assert not errors, errors
  requests = set()
  for entry in driver.get_log("performance"):
    message = json.loads(entry["message"])["message"]
    if message["method"] == "Network.requestWillBeSent":
      requests.add(message["params"]["request"]["url"])
  own = (eval_dir / "report.html").resolve().as_uri()
  assert {u for u in requests if not u.startswith("data:")} <= {own}, requests
  shot = tmp_path / "report.png"
  driver.save_screenshot(str(shot))
  with Image.open(shot) as im:
    pixels = np.asarray(im.convert("RGB"), np.float64)
  assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200


def test_the_page_is_self_contained(evaluation):
  eval_dir, metrics = evaluation
  text = (eval_dir / "report.html").read_text()
  assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
  assert "Content-Security-Policy" in text and "default-src 'none'" in text
  data = json.loads(re.search(r'<script type="application/json" id="fmjax-data">(.*?)</script>',
                              text, re.S).group(1))
  assert [im["score"] for im in data["images"]] == [im["score"] for im in metrics["images"]]


def test_a_page_that_cannot_be_written_leaves_the_rest_of_the_report(tmp_path, monkeypatch,
                                                                     capsys):
  monkeypatch.setattr(page, "MAX_IMAGES", 4)  # fewer than the 12 test images
  monkeypatch.setattr(page, "THUMBNAIL_SIDES", ((4, 96, 64),))
  run = tmp_path / "run"
  fm_main.run(tiny_config(), str(run), "train_and_evaluate")
  err = capsys.readouterr().err
  assert not (run / "eval" / "report.html").exists()
  lines = [l for l in err.splitlines() if "report.html" in l]
  assert len(lines) == 1 and lines[0].startswith("fmjax: warning: ") and "12 test images" in lines[0]
  for name in ("metrics.json", "metrics.md", "scores.csv", "roc_pr.png", "score_histogram.png"):
    assert (run / "eval" / name).exists()


def test_study_page_tables_sort_and_plots_hover(browser, evaluation):
  eval_dir, _ = evaluation
  run = eval_dir.parent
  study = fm_main.run(_config(**{"study.name": "compute", "study.compute": "1x1,2x2,2x1"}),
                      str(run), "study")
  path = run / "studies" / "compute" / "report.html"
  open_page(browser, path)
  md = (run / "studies" / "compute" / "results.md").read_text()
  md_rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in md.splitlines()
             if l.startswith("| ") and not l.startswith("| Setting")]
  header = [th.text for th in browser.find_elements("css selector", "#table-0 thead th")]
  assert header[:2] == ["Setting", "K*T"] and header[-1] == "images/s"
  rows = [[td.text for td in r.find_elements("css selector", "td")]
          for r in browser.find_elements("css selector", "#table-0 tbody tr")]
  assert rows == md_rows
  assert [r[0] for r in rows] == [f"{r['group']}: {r['label']}" for r in study["rows"]]
  column = header.index("I-AUROC")
  browser.find_elements("css selector", "#table-0 thead th")[column].click()
  ordered = [float(r.find_elements("css selector", "td")[column].text)
             for r in browser.find_elements("css selector", "#table-0 tbody tr")]
  assert ordered == sorted(float(r[column]) for r in md_rows)
  dots = browser.find_elements("css selector", "#plot-0 circle.dot")
  plotted = sum(any(r["mean"].get(k) is not None for r in study["rows"])
                for k in ("image_auroc", "pixel_auroc", "pixel_aupro"))
  assert len(dots) == plotted * 3
  titles = [d.find_element("css selector", "title").get_attribute("textContent") for d in dots]
  value = float("%.4g" % (100 * study["rows"][0]["mean"]["image_auroc"]))
  assert f"image AUROC: K=T: K=1 T=1, setting 0, percent (mean over categories) {value:g}" in titles
  logy = browser.find_elements("css selector", ".controls input[type=checkbox]")[-1]
  logy.click()
  assert browser.find_element("id", "plot-0").get_attribute("data-log-y") == "true"
  assert len(browser.find_elements("css selector", "#plot-0 circle.dot")) == plotted * 3
  assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _decoded_size(uri):
  import base64
  import io
  with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
    return im.size


def test_thumbnails_keep_the_aspect_and_shrink_to_the_byte_budget(shared_data, monkeypatch):
  assert _decoded_size(page.image_thumbnail(np.zeros((40, 100, 3), np.uint8), 96)) == (96, 38)
  assert _decoded_size(page.grey_png(np.zeros((300, 30), np.uint8), 128)) == (13, 128)
  assert _decoded_size(page.image_thumbnail(np.zeros((20, 10, 3), np.uint8), 96)) == (10, 20)
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "report_page_benchmark", pathlib.Path(__file__).parents[1] / "benchmarks" / "report_page.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  result, dataset, heat, scores = bench.build(60)
  scales = page.plots.heat_scales(dataset.test_classes, heat)
  full = page.evaluation_page(result, dataset, heat, scores, scales=scales)
  assert full["thumbnails"] == [192, 192] and len(full["images"]) == 60
  pictures = sum(len(e[k]) for e in full["images"] for k in ("img", "heat", "mask") if k in e)
  monkeypatch.setattr(page, "MAX_PICTURE_BYTES", pictures // 2)
  small = page.evaluation_page(result, dataset, heat, scores, scales=scales)
  side, heat_side = small["thumbnails"]
  assert side < 192 and heat_side < 192
  assert sum(len(e[k]) for e in small["images"] for k in ("img", "heat", "mask") if k in e) \
      <= pictures // 2 or (side, heat_side) == page.THUMBNAIL_SIDES[-1][1:]
  assert max(_decoded_size(small["images"][0]["heat"])) == heat_side
  assert max(_decoded_size(small["images"][0]["img"])) == side


def test_the_benchmark_builds_and_times_a_page(shared_data, tmp_path):
  import subprocess
  import sys
  repo = pathlib.Path(__file__).parents[1]
  out = subprocess.run([sys.executable, "benchmarks/report_page.py", "--images", "50", "--out",
                        str(tmp_path)], cwd=repo, capture_output=True, text=True, timeout=600)
  if out.returncode and "Chromium and ChromeDriver not found" in out.stdout + out.stderr:
    pytest.skip("Chromium not installed")
  assert out.returncode == 0, out.stderr[-3000:]
  row = json.loads(out.stdout.strip().splitlines()[-1])
  assert row["images"] == 50 and row["console_errors"] == 0 and row["thumbnail_sides"] == [192, 192]
  assert row["page_mb"] == round((tmp_path / "report.html").stat().st_size / 1e6, 2)
  assert row["ready_ms"] > 0 and row["cards_drawn_after_scroll_ms"] >= 0
