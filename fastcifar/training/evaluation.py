"""Looking at a trained model and its training: accuracy per class, pictures.

Numbers: `predict_classes`, `confusion_matrix`, `per_class_accuracy`,
`format_report`. Pictures (PNG, through matplotlib's Agg canvas, so no
display and no global backend change): `plot_confusion_matrix` and
`plot_history`. matplotlib is an optional dependency, imported only when a
picture is drawn: `pip install 'fastcifar[plot]'`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fastcifar.training import outputs
from fastcifar.errors import UsageError

CONFUSION_FIGSIZE = (8.0, 7.0)        # inches; 800 x 700 pixels at DPI
CONFUSION_FIGSIZE_MANY = (16.0, 15.0)  # above 20 classes
HISTORY_FIGSIZE = (11.0, 4.5)          # 1100 x 450 pixels at DPI
DPI = 100


def predict_classes(model, images: np.ndarray, batch_size: int = 500,
                    tta: bool = False) -> np.ndarray:
  """The model's predicted class for each image, in batches.

  Args:
    model: a Keras model (fastcifar's take uint8 images as they are).
    images: the inputs, as the model takes them.
    batch_size: images per forward pass.
    tta: average the outputs over `augment.test_time_views`, as training's
      final evaluation does when its `tta` is on.

  Returns:
    int64 class ids, one per image.
  """
  views = [(images, 1.0)]
  if tta:
    from fastcifar.data import augment  # pylint: disable=g-import-not-at-top
    views = augment.test_time_views(images)
  probs = sum(weight * model.predict(np.asarray(view), batch_size=batch_size,
                                     verbose=0) for view, weight in views)
  return np.argmax(probs, axis=-1)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray,
                     num_classes: int) -> np.ndarray:
  """Counts: row i, column j is how many of class i were predicted as j.

  Args:
    labels: true class ids, shape (N,) (an (N, 1) column is flattened).
    predictions: predicted class ids, shape (N,).
    num_classes: the matrix is num_classes x num_classes.

  Returns:
    int64 array (num_classes, num_classes).
  """
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
  if labels.shape != predictions.shape:
    raise ValueError(f"{labels.size} labels but {predictions.size} "
                     "predictions")
  counts = np.bincount(labels * num_classes + predictions,
                       minlength=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
  """Accuracy of each class (its recall); NaN for a class with no examples."""
  totals = confusion.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.diag(confusion) / totals


def overall_accuracy(confusion: np.ndarray) -> float:
  """Correct predictions over all predictions."""
  return float(np.trace(confusion) / max(confusion.sum(), 1))


def format_report(confusion: np.ndarray, class_names: Sequence[str]) -> str:
  """Overall and per-class accuracy as a table a person reads.

  Args:
    confusion: from `confusion_matrix`.
    class_names: one name per row.

  Returns:
    Lines: overall accuracy, then class, accuracy, images, and the class it
    is most often mistaken for.
  """
  correct, total = int(np.trace(confusion)), int(confusion.sum())
  width = max(len("class"), *(len(n) for n in class_names))
  lines = [f"accuracy {overall_accuracy(confusion):.4f} ({correct:,} of "
           f"{total:,} images)", "",
           f"{'class':<{width}}  accuracy  images  most often taken for"]
  for i, (name, accuracy) in enumerate(zip(class_names,
                                           per_class_accuracy(confusion))):
    wrong = confusion[i].copy()
    wrong[i] = 0
    taken = (f"{class_names[int(np.argmax(wrong))]} ({int(wrong.max())})"
             if wrong.max() > 0 else "-")
    shown = "     -" if np.isnan(accuracy) else f"{accuracy:8.4f}"
    lines.append(f"{name:<{width}}  {shown}  {int(confusion[i].sum()):6d}  "
                 f"{taken}")
  return "\n".join(lines)


def _figure(figsize: tuple[float, float]):
  """A matplotlib Figure on an Agg canvas; no pyplot, no global backend."""
  try:  # pylint: disable=g-import-not-at-top
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError as e:
    raise UsageError("drawing pictures needs matplotlib: "
                     "pip install 'fastcifar[plot]'") from e
  figure = Figure(figsize=figsize, dpi=DPI)
  FigureCanvasAgg(figure)
  return figure


def _save_png(figure, path: str) -> None:
  # No bbox_inches="tight": the picture keeps the size it was drawn at.
  with outputs.atomic_path(path) as tmp:
    figure.savefig(tmp, format="png", dpi=DPI)


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str],
                          path: str, title: str = "") -> None:
  """Writes the confusion matrix as a PNG, rows normalized to fractions.

  Each cell is coloured by the fraction of the true class (row) predicted as
  that column, so classes of any size compare; up to 20 classes the counts
  are written in the cells.

  Args:
    confusion: from `confusion_matrix`.
    class_names: one name per row and column.
    path: the `.png` to write (atomically).
    title: the picture's title; overall accuracy is added to it.
  """
  num_classes = len(class_names)
  few = num_classes <= 20
  figure = _figure(CONFUSION_FIGSIZE if few else CONFUSION_FIGSIZE_MANY)
  axes = figure.add_subplot()
  totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  fractions = confusion / totals
  image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
  figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04,
                  label="fraction of the true class")
  ticks = np.arange(num_classes)
  size = 9 if few else 5
  axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right",
                  fontsize=size)
  axes.set_yticks(ticks, labels=class_names, fontsize=size)
  axes.set_xlabel("predicted class")
  axes.set_ylabel("true class")
  if few:
    for i in range(num_classes):
      for j in range(num_classes):
        axes.text(j, i, str(int(confusion[i, j])), ha="center", va="center",
                  fontsize=8,
                  color="white" if fractions[i, j] > 0.5 else "black")
  heading = f"accuracy {overall_accuracy(confusion):.2%}"
  axes.set_title(f"{title}: {heading}" if title else heading)
  figure.tight_layout()
  _save_png(figure, path)


def plot_history(history: Mapping[str, Sequence[float]], path: str,
                 title: str = "") -> None:
  """Writes loss and accuracy curves per epoch (train and test) as a PNG.

  Args:
    history: `history.json` as fastcifar.train writes it (Keras's
      `History.history`): lists per epoch under `loss`, `accuracy`,
      `val_loss`, `val_accuracy`, and `val_epochs` (after which epochs the
      val_* set was evaluated, when not after each); any may be missing.
      `num_validation_examples` [N > 0] says val_* is a validation split
      held out of the training set, else the test set.
    path: the `.png` to write (atomically).
    title: the picture's title.

  Raises:
    UsageError: the history holds neither loss nor accuracy.
  """
  panels = [("loss", "loss"), ("accuracy", "accuracy")]
  if not any(history.get(key) or history.get(f"val_{key}")
             for key, _ in panels):
    raise UsageError("the history has no loss or accuracy per epoch; give "
                     "the history.json that fastcifar.train writes")
  val_name = ("validation" if (history.get("num_validation_examples")
                               or [0])[0] else "test")
  figure = _figure(HISTORY_FIGSIZE)
  axes_list = figure.subplots(1, 2)
  for axes, (key, label) in zip(axes_list, panels):
    for name, series, style in (("train", history.get(key), "-o"),
                                (val_name, history.get(f"val_{key}"), "-s")):
      if series:
        epochs = np.arange(1, len(series) + 1)
        if name == val_name and len(history.get("val_epochs", ())) == len(
            series):  # evaluated after these epochs only
          epochs = history["val_epochs"]
        axes.plot(epochs, series, style, markersize=3, label=name)
    axes.set_xlabel("epoch")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
    if axes.has_data():
      axes.legend()
      axes.xaxis.get_major_locator().set_params(integer=True)
    if key == "accuracy" and axes.has_data():
      split = val_name if history.get("val_accuracy") else "train"
      best = max(history.get("val_accuracy") or history["accuracy"])
      axes.set_title(f"best {split} accuracy {best:.2%}", fontsize=10)
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  _save_png(figure, path)
