"""grain input pipelines: random-access sources, the training batch stream, device prefetch.

Training batches are a grain `MapDataset`: the images shuffled per epoch from the
config seed, repeated, cropped (`data.crop_size`; each crop's position drawn from the seed
and the stream index), batched and sliced per host. Element `s` of a host's
dataset is that host's rows of global batch `s`, so the stream is a pure
function of (seed, step): the iterator state saved with each checkpoint is just
the next index, and resuming reproduces the uninterrupted run exactly.

    global batch s = shuffled stream[s*B : (s+1)*B]
    host h (of P) gets rows [h*B/P, (h+1)*B/P) of it

Sources are either decoded arrays in memory (`ArraySource`, the default: MVTec
at 128x128 is ~180 MB) or image files decoded on access (`ImageFileSource`,
for datasets larger than memory; decoding then runs in grain worker processes).
Images stay uint8 until they reach the device; the jitted step normalises them,
so each batch moves 4x fewer bytes from host to device than float32 would.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

import grain
import numpy as np
from absl import flags

from fmjax.core import sharding
from fmjax.data.decode import read_image
from fmjax.core.errors import ConfigError


class ArraySource(grain.sources.RandomAccessDataSource):
  """uint8 images [N,H,W,3] and int32 labels [N] in memory -> {"image", "label"}."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if len(images) != len(labels):
      raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    self._images, self._labels = images, labels

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int) -> dict:
    return {"image": self._images[index], "label": self._labels[index]}


class ImageFileSource(grain.sources.RandomAccessDataSource):
  """Image files decoded and resized (`data.resize`) on access -> {"image" uint8 [H,W,3], "label"}."""

  def __init__(self, paths: Sequence[str], labels: np.ndarray, image_size: int,
               resize: str = "square"):
    if len(paths) != len(labels):
      raise ValueError(f"{len(paths)} paths but {len(labels)} labels.")
    self._paths, self._labels, self._size = list(paths), np.asarray(labels, np.int32), image_size
    self._resize = resize

  def __len__(self) -> int:
    return len(self._paths)

  def __getitem__(self, index: int) -> dict:
    image = read_image(self._paths[index], self._size, self._resize)
    return {"image": image, "label": self._labels[index]}


class RandomCrop(grain.transforms.RandomMap):
  """{"image" [H,W,3], ...} -> the same with a `size` x `size` crop at a uniform position, from
  the generator grain seeds with (pipeline seed, stream index): a pure function of both."""

  def __init__(self, size: int):
    self.size = size

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    image = element["image"]
    h, w = image.shape[:2]
    if h < self.size or w < self.size:
      raise ConfigError(f"data.crop_size {self.size} is larger than a {w}x{h} training image.")
    y, x = rng.integers(0, h - self.size + 1), rng.integers(0, w - self.size + 1)
    return {**element, "image": image[y:y + self.size, x:x + self.size]}


def train_dataset(source: grain.sources.RandomAccessDataSource, batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  crop_size: int = 0) -> grain.MapDataset:
  """This host's batches: element s = {"image" [B/P,H,W,3], "label" [B/P]} of global batch s;
  with `crop_size`, every image a random crop [crop_size,crop_size,3] (`RandomCrop`)."""
  if batch_size % process_count:
    raise ConfigError(f"train.batch_size {batch_size} is not divisible by {process_count} hosts.")
  per_host = batch_size // process_count
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  if crop_size:
    ds = ds.random_map(RandomCrop(crop_size))
  ds = ds.batch(per_host, drop_remainder=True)
  return ds[process_index::process_count] if process_count > 1 else ds


def train_iterator(ds: grain.MapDataset, state: dict | None = None, num_workers: int = 0,
                   num_threads: int = 4, prefetch: int = 4, start: int = 0) -> grain.DatasetIterator:
  """An iterator over `ds` with threads or worker processes.

  Resumed from a saved grain `state` (as `get_state()` returned it with the same
  `num_workers`), or else started at element `start`.
  """
  if state is None and start:
    ds = ds[start:]
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside fmjax.main use defaults
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  iterator = iter(it)
  if state is not None:
    iterator.set_state(state)
  return iterator


class DevicePrefetcher:
  """Moves host batches from `iterator` onto the mesh (batch axis sharded) in a background thread.

  Keeps `depth` batches in flight, so host-to-device copies overlap the train step.
  `state()` is the iterator state after the last batch returned by `next()`.
  """

  def __init__(self, iterator: grain.DatasetIterator, mesh, count: int, depth: int = 2):
    self._q: queue.Queue = queue.Queue(maxsize=depth)
    data = sharding.data_sharding(mesh)
    self._state = iterator.get_state()
    self._iterator = iterator

    self._stop = threading.Event()

    def put(item) -> bool:
      while not self._stop.is_set():
        try:
          self._q.put(item, timeout=0.1)
          return True
        except queue.Full:
          pass
      return False

    def work():
      try:
        for _ in range(count):
          batch = next(iterator)
          state = iterator.get_state()
          if not put((sharding.to_global(batch["image"], data),
                      sharding.to_global(batch["label"].astype(np.int32), data), state)):
            return
      except Exception as e:  # pylint: disable=broad-except
        put(e)  # re-raised in the training thread

    self._thread = threading.Thread(target=work, daemon=True)
    self._thread.start()

  def next(self):
    item = self._q.get()
    if isinstance(item, Exception):
      raise item
    images, labels, self._state = item
    return images, labels

  def state(self) -> dict:
    return self._state

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=30)
    close = getattr(self._iterator, "close", None)
    if close is not None:
      close()  # stops grain's worker processes
