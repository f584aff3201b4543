"""Scoring a data set's unlabeled test splits into the form its evaluation server accepts
(MVTec AD 2's test_private and test_private_mixed; the format is the set module's
`submission_files`, e.g. `fmjax.data.sets.mvtec_ad2`).

  <workdir>/scores/<set FOLDER>/          the submission folder, written as one group
  <workdir>/scores/<set FOLDER>.tar.gz    the same, packed for upload (paths <FOLDER>/...)

Each map is scored at data.resize's size and enlarged to its image file's size (bilinear, as
the report's pixel metrics at native size); the binary maps use each category's calibrated
pixel threshold, and are left out (the server then skips its thresholded metrics) when there is
no calibration for this checkpoint and scorer.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import tempfile

import numpy as np

from fmjax.core import console, files
from fmjax.core.errors import ConfigError
from fmjax.core.workdir import check_output_folder
from fmjax.data import categories_of, sets
from fmjax.data.sources import read_images
from fmjax.decide import calibration
from fmjax.score import maps
from fmjax.score.scoring import CALIBRATION_KEYS
from fmjax.score.session import ScoringSession

CHUNK = 16  # images decoded and scored at a time: memory stays bounded on large private tests


def server_splits(config) -> list[tuple[str, str, list[str]]]:
  """The unlabeled splits the set's server scores, checked before anything is written."""
  data_set = sets.registry().get(config.data.name)  # None: the procedural synthetic set
  if data_set is None or data_set.server is None:
    raise ConfigError(f"--mode=score needs --config.data.score_dir=<folder of images> "
                      f"({config.data.name} has no unlabeled server splits).")
  if not config.data.root:
    raise ConfigError(f"Set --config.data.root to the {config.data.name} data folder.")
  return data_set.server.unlabeled_splits(config.data.root, categories_of(config.data))


def score_for_server(config, workdir: str) -> dict:
  """Scores every unlabeled split into the server's format; returns {"folder", "archive",
  "images": {(category, split): count}, "thresholded": bool} on process 0 ({} on the others,
  which score their share of every batch and write nothing)."""
  server = sets.get(config.data.name).server
  splits = server_splits(config)
  out_dir = os.path.join(workdir, "scores", server.FOLDER)
  check_output_folder(out_dir)  # before any scoring
  import tifffile  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (every process, first)
  session = ScoringSession.load(config, workdir)
  missing = sorted({c for c, _, _ in splits} - set(session.class_names))
  if missing:
    raise ConfigError(f"The checkpoint was trained on {session.class_names}, not on {missing}: "
                      "set --config.data.categories to the categories it was trained on.")
  calibrated, _ = calibration.load(workdir, session.settings(), CALIBRATION_KEYS)
  main = console.is_main_process()
  counts, unthresholded = {}, []
  if main:
    files.makedirs(os.path.dirname(out_dir))
  with contextlib.ExitStack() as stack:
    group = tar = tar_path = None  # process 0's
    if main:
      group = stack.enter_context(files.folder_group(out_dir))
      tar_path = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()),
                              "submission.tar.gz")
      tar = stack.enter_context(tarfile.open(tar_path, "w:gz"))
    for category, split, paths in splits:
      threshold = _pixel_threshold(calibrated, category, config.evaluate.sensitivity)
      if threshold is None:
        unthresholded.append(category)
      label = session.class_names.index(category)
      for path, heatmap in _score_split(config, session, paths, label):
        if not main:  # every process scores its share of each batch; the first one writes
          continue
        for rel, data in server.submission_files(category, split, path, heatmap,
                                                 threshold).items():
          files.makedirs(os.path.dirname(os.path.join(group, rel)))
          files.write_bytes(os.path.join(group, rel), data)
          info = tarfile.TarInfo(f"{server.FOLDER}/{rel}")
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
      counts[(category, split)] = len(paths)
    if main:
      tar.close()
      archive = out_dir + ".tar.gz"
      files.put_file(tar_path, archive)  # whole or not at all, streamed
  if not main:
    return {}
  expected = getattr(server, "SERVER_COUNTS", {})
  short = [f"{c}/{s}: {n} of {expected[c]}" for (c, s), n in counts.items()
           if c in expected and n != expected[c]]
  absent = [c for c in expected if c not in {c for c, _ in counts}]
  if short or absent:
    console.warn("the evaluation server expects every category's full private tests; "
                 + "; ".join(short + ([f"categories not scored: {absent}"] if absent else [])))
  if unthresholded:
    console.warn(f"no calibrated pixel threshold for {sorted(set(unthresholded))} (run "
                 "--mode=calibrate with these settings first): their binary maps are left out, "
                 "so the server skips its thresholded metrics for them.")
  console.say(f"Scored {sum(counts.values())} images of {len(counts)} unlabeled splits into "
              f"{out_dir}/ and {archive} (the evaluation server's format; step {session.step}).")
  return {"folder": out_dir, "archive": archive, "images": counts,
          "thresholded": not unthresholded}


def _pixel_threshold(calibrated, category: str, sensitivity: float) -> float | None:
  """The category's calibrated pixel threshold moved by evaluate.sensitivity (None: none)."""
  if calibrated is None or category not in calibrated.categories:
    return None
  scale = calibrated.scale(category, "pixel", sensitivity)
  threshold = (scale.decision_threshold if scale is not None
               else calibrated.threshold(category, level="pixel"))
  return float(threshold) if np.isfinite(threshold) else None


def _score_split(config, session: ScoringSession, paths: list[str], label: int):
  """(path, heatmap at its file's size) of every image, CHUNK at a time."""
  for start in range(0, len(paths), CHUNK):
    chunk = paths[start:start + CHUNK]
    images = read_images(chunk, config.data.image_size, resize=config.data.get("resize", "square"))
    heatmaps, _, _ = session.score(images.array, np.full(len(chunk), label), what="server split")
    for path, heatmap, (h, w) in zip(chunk, heatmaps, images.file_sizes):
      yield path, maps.resize_map(heatmap, h, w)
