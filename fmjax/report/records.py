"""An evaluation's results as a record: `Evaluation`, written as <workdir>/eval/metrics.json.

  metrics.json   {pooled metrics (image_auroc, ..., pixel_aupro at the top level), "mean",
                  "per_category", "settings", "images", optional "cascade", optional
                  "calibrated"}; NaN (an undefined metric) is written as null

`Evaluation.to_json()` gives that layout exactly (older runs and tests read it) and
`Evaluation.from_json()` reads it back (a corrupt file is one CorruptFileError line). The
calibrated and cascade sections are `fmjax.decide.calibration.CalibratedResults` and
`fmjax.decide.cascade.CascadeResults`, built where the decisions are made.
`fmjax.decide.decisions.stored_threshold` reads the F1-optimal thresholds of the file itself
(decide/ sits below report/).
"""

from __future__ import annotations

import dataclasses

from fmjax.core.records import Fields, json_safe
from fmjax.decide.calibration import CalibratedResults
from fmjax.decide.cascade import CascadeResults
from fmjax.report.metrics import REPORTED_KEYS

FIX = "run --mode=evaluate to write it again"


@dataclasses.dataclass(frozen=True)
class Metrics:
  """The seven metrics, AUPIMO and AU-sPRO (fractions in [0, 1]) and the F1-optimal thresholds
  (score units) of `fmjax.report.metrics.compute_metrics`. NaN: undefined (one class only, no defect pixels);
  None: not measured (pixel metrics without masks; a mean has no thresholds)."""
  image_auroc: float | None = None
  image_ap: float | None = None
  image_f1_max: float | None = None
  image_f1_threshold: float | None = None  # image score, flagged at or above it
  pixel_auroc: float | None = None
  pixel_ap: float | None = None
  pixel_f1_max: float | None = None
  pixel_f1_threshold: float | None = None
  pixel_aupro: float | None = None  # up to a false-positive rate of 0.3
  pixel_aupimo: float | None = None  # AUPIMO over the shared FPR range evaluate.aupimo_fpr
  pixel_spro: float | None = None  # AU-sPRO up to FPR 0.05 (data sets with saturated regions)

  @classmethod
  def from_dict(cls, values: dict) -> "Metrics":
    """From compute_metrics's or mean_over_categories's dict (curves are not metrics)."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

  def as_dict(self) -> dict:
    """{metric key: value} of the measured ones, in compute_metrics's order (NaN kept)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None}

  def metrics(self) -> dict:
    """{key: value} of the metrics (REPORTED_KEYS) that were measured, no thresholds."""
    return {k: v for k, v in self.as_dict().items() if k in REPORTED_KEYS}

  to_json = as_dict

  @classmethod
  def from_fields(cls, f: Fields) -> "Metrics":
    return cls(**{m.name: f.optional_number(m.name) for m in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """What was evaluated and how: the dataset, the scorer's settings
  (`fmjax.score.scoring.scorer_settings`) and the scoring run."""
  dataset: str
  categories: tuple[str, ...]
  checkpoint_step: int
  method: str
  method_options: dict
  use_ema: bool
  seed: int
  val_fraction: float | None  # None: an evaluation written before it was recorded
  images_per_s: float  # test images scored per second, compilation included
  num_test_images: int
  batch_size: int
  num_devices: int
  pixel_metrics_at: str = "scored"  # or "native": maps enlarged to their files' sizes
  sensitivity: float = 0.5  # evaluate.sensitivity of the images' calibrated decisions
  checkpoint: str | None = None  # its fingerprint (None: written before it was recorded)
  aupimo_fpr: tuple[float, float] | None = None  # AUPIMO's FPR range (None: not measured)

  def to_json(self) -> dict:
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out["categories"] = list(self.categories)
    if self.val_fraction is None:
      del out["val_fraction"]
    if self.pixel_metrics_at == "scored":  # as evaluations written before it was recorded
      del out["pixel_metrics_at"]
    if self.sensitivity == 0.5:  # likewise
      del out["sensitivity"]
    if self.checkpoint is None:
      del out["checkpoint"]
    if self.aupimo_fpr is None:
      del out["aupimo_fpr"]
    else:
      out["aupimo_fpr"] = list(self.aupimo_fpr)
    return out

  @classmethod
  def from_fields(cls, f: Fields) -> "EvalSettings":
    return cls(dataset=f.string("dataset"), categories=tuple(f.strings("categories")),
               checkpoint_step=f.integer("checkpoint_step"), method=f.string("method"),
               method_options=f.fields("method_options").obj, use_ema=f.boolean("use_ema"),
               seed=f.integer("seed"), val_fraction=f.optional_number("val_fraction"),
               images_per_s=f.number("images_per_s", nullable=True),
               num_test_images=f.integer("num_test_images"), batch_size=f.integer("batch_size"),
               num_devices=f.integer("num_devices"),
               pixel_metrics_at=f.string("pixel_metrics_at") if f.has("pixel_metrics_at")
               else "scored",
               sensitivity=f.number("sensitivity") if f.has("sensitivity") else 0.5,
               checkpoint=f.string("checkpoint") if f.has("checkpoint") else None,
               aupimo_fpr=tuple(f.numbers("aupimo_fpr")) if f.has("aupimo_fpr") else None)


@dataclasses.dataclass(frozen=True)
class ImageResult:
  """One test image: its label (1 = anomalous), image score, the size it was scored at (pixels;
  0 in evaluations from before sizes were recorded) and, when calibrated, the decision at the
  first calibrated rate moved by evaluate.sensitivity ("anomalous" or "normal"; None: its
  category has no calibration) with the normalised score (`fmjax.decide.normalize`, in [0, 1],
  0.5 at that threshold; None without calibrated minima)."""
  path: str
  category: str
  defect: str
  label: int
  score: float
  calibrated_decision: str | None = None
  width: int = 0
  height: int = 0
  normalised_score: float | None = None

  def to_json(self) -> dict:
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    for key in ("calibrated_decision", "normalised_score"):
      if out[key] is None:
        del out[key]
    if not self.width:  # an evaluation from before sizes were recorded reads back as it was
      del out["width"], out["height"]
    return out

  @classmethod
  def from_fields(cls, f: Fields) -> "ImageResult":
    size = {k: f.integer(k) for k in ("width", "height") if f.has(k)}
    return cls(f.string("path"), f.string("category"), f.string("defect"), f.integer("label"),
               f.number("score", nullable=True),
               f.string("calibrated_decision") if f.has("calibrated_decision") else None, **size,
               normalised_score=f.number("normalised_score") if f.has("normalised_score") else None)


@dataclasses.dataclass(frozen=True)
class GroupMetrics:
  """One defect type's images with the normal test images: the metrics per category and
  their mean."""
  per_category: dict[str, Metrics]
  mean: Metrics

  def to_json(self) -> dict:
    return {"per_category": {n: m.to_json() for n, m in self.per_category.items()},
            "mean": self.mean.to_json()}

  @classmethod
  def from_fields(cls, f: Fields) -> "GroupMetrics":
    return cls({n: Metrics.from_fields(m) for n, m in f.each("per_category").items()},
               Metrics.from_fields(f.fields("mean")))


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """An evaluation of a labelled test split (`fmjax.report.evaluate.evaluate`)."""
  pooled: Metrics  # all test images in one ranking
  mean: Metrics  # each metric averaged over the categories (the papers' Mean row)
  per_category: dict[str, Metrics]
  settings: EvalSettings
  images: tuple[ImageResult, ...]  # the test split in order
  cascade: CascadeResults | None = None  # with evaluate.cascade.enabled and calibrated bands
  calibrated: CalibratedResults | None = None  # with a matching calibration.json
  # Defect types reported apart, each with the normal test images (MVTec LOCO AD's logical and
  # structural anomalies): {group: GroupMetrics}; None for data sets without groups.
  by_defect_group: dict[str, "GroupMetrics"] | None = None

  def f1_thresholds(self) -> dict[str, float]:
    """{category: its F1-optimal image threshold (tuned on the test labels)}."""
    return {name: m.image_f1_threshold for name, m in self.per_category.items()}

  def to_json(self) -> dict:
    """metrics.json's JSON object (NaN and inf as null)."""
    out = {**self.pooled.to_json(), "mean": self.mean.to_json(),
           "per_category": {n: m.to_json() for n, m in self.per_category.items()},
           "settings": self.settings.to_json(), "images": [i.to_json() for i in self.images]}
    if self.cascade is not None:
      out["cascade"] = self.cascade.to_json()
    if self.calibrated is not None:
      out["calibrated"] = self.calibrated.to_json()
    if self.by_defect_group is not None:
      out["by_defect_group"] = {g: m.to_json() for g, m in self.by_defect_group.items()}
    return json_safe(out)

  @classmethod
  def from_json(cls, obj, source: str = "metrics.json") -> "Evaluation":
    """The record of metrics.json's parsed `obj` (null -> NaN); CorruptFileError naming `source`
    and the entry when one is missing or of the wrong type."""
    f = Fields(obj, source, FIX)
    return cls(pooled=Metrics.from_fields(f), mean=Metrics.from_fields(f.fields("mean")),
               per_category={n: Metrics.from_fields(m) for n, m in f.each("per_category").items()},
               settings=EvalSettings.from_fields(f.fields("settings")),
               images=tuple(ImageResult.from_fields(i) for i in f.list_of("images")),
               cascade=CascadeResults.from_fields(f.fields("cascade")) if f.has("cascade") else None,
               calibrated=(CalibratedResults.from_fields(f.fields("calibrated"))
                           if f.has("calibrated") else None),
               by_defect_group=({g: GroupMetrics.from_fields(m)
                                 for g, m in f.each("by_defect_group").items()}
                                if f.has("by_defect_group") else None))
