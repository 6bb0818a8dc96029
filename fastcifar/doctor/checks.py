"""`check`: a compiled classifier and one batch of its data, before training."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from fastcifar.doctor.findings import ERROR, WARNING, Finding
from fastcifar.errors import UsageError

# Layers that normalize their input themselves: pixels may reach them raw.
_NORMALIZING_LAYERS = ("BatchNormalization", "LayerNormalization",
                       "GroupNormalization", "UnitNormalization",
                       "RMSNormalization")
_ADAPTIVE_OPTIMIZERS = ("Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Lamb",
                        "Adafactor")


def check(model: keras.Model, data: Any = None, labels: Any = None, *,
          one_hot_on_device: bool = False,
          batch_size: int = 32) -> list[Finding]:
  """Inspects a compiled classifier and one batch of its training data.

  Looks at the model (loss and its `from_logits`, the output activation and
  dtype, the layers, the optimizer's learning rate, the metrics) and at one
  batch: how the pixels reach the first layer with weights, what the labels
  look like next to the loss, whether the batch holds one class only. Runs the
  model once on the batch, in inference mode; changes nothing.

  Args:
    model: a compiled single-output Keras classifier. Without `compile`, the
      loss, optimizer and metric checks are skipped.
    data: the training data as fed to `fit`: a `tf.data.Dataset` of
      `(x, y)` or `(x, y, sample_weight)` batches (its first batch is used),
      an array of inputs with `labels`, or a tuple `(x, y)`. None checks the
      model alone, on a random batch.
    labels: the labels, when `data` is an array.
    one_hot_on_device: True when the training step turns integer class ids
      into one-hot vectors itself, before the loss, as
      `fastcifar.training.trainer` does on the device. The labels in `data` must
      then be int class ids of shape (N,), and the loss is checked against the
      one-hot vectors they become: fastcifar's CategoricalCrossentropy with int
      labels is right.
    batch_size: examples taken from an array, or batched from an unbatched
      dataset.

  Returns:
    The findings, errors first; empty when nothing is wrong.
  """
  x, y, from_dataset = _first_batch(model, data, labels, batch_size)
  made_up = x is None
  if made_up:
    x = _random_batch(model, batch_size)
  findings = []
  if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
    findings.append(Finding(
        "nan-input", ERROR,
        f"the batch holds {int(np.sum(~np.isfinite(x)))} NaN or infinite "
        "input values; the loss will be NaN",
        "find and drop the broken examples: keep = np.isfinite(x).all("
        "axis=(1, 2, 3)); x, y = x[keep], y[keep]"))
  if _is_image_batch(x):
    # A made-up float batch says nothing about the pixels the data holds; a
    # made-up uint8 batch is what an integer Input takes.
    if not made_up or np.issubdtype(x.dtype, np.integer):
      findings += _check_pixels(model, x)
    findings += _check_layers(model)
  try:
    outputs = _call(model, x)
  except UsageError:
    if any(f.code == "integer-input" for f in findings):
      return findings  # Conv2D refuses uint8 outright: that is the finding
    raise
  num_classes = int(outputs.shape[-1]) if outputs is not None else None
  loss = _loss_info(model)
  if outputs is not None:
    kind = _output_kind(model, outputs)
    findings += _check_output_dtype(outputs)
    if loss is not None:
      findings += _check_logits(loss, kind)
    if y is not None and loss is not None:
      findings += _check_labels(y, loss, kind, num_classes, one_hot_on_device)
  if y is not None and num_classes:
    findings += _check_single_class(y, num_classes, from_dataset)
  findings += _check_learning_rate(model)
  findings += _check_metrics(model)
  return sorted(findings, key=lambda f: f.severity != ERROR)


def _first_batch(model: keras.Model, data: Any, labels: Any, batch_size: int
                 ) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
  """`(x, y, from_dataset)` of the first batch training will see."""
  if data is None:
    return None, None, False
  if isinstance(data, tf.data.Dataset):
    element = next(iter(data.take(1)))
    if _input_rank(model) is not None and _rank(element) == _input_rank(
        model) - 1:  # unbatched elements: batch them as fit would need
      element = next(iter(data.batch(batch_size).take(1)))
    if not isinstance(element, (tuple, list)):
      return np.asarray(element), None, True
    x = np.asarray(element[0])
    y = np.asarray(element[1]) if len(element) > 1 else None
    return x, y, True
  if isinstance(data, tuple) and len(data) == 2 and labels is None:
    data, labels = data
  x = np.asarray(data[:batch_size])
  y = None if labels is None else np.asarray(labels[:batch_size])
  return x, y, False


def _rank(element) -> int:
  first = element[0] if isinstance(element, (tuple, list)) else element
  return len(first.shape)


def _input_rank(model: keras.Model) -> int | None:
  try:
    return len(model.inputs[0].shape)
  except (AttributeError, IndexError, TypeError, ValueError):
    return None


def _random_batch(model: keras.Model, batch_size: int) -> np.ndarray:
  """A stand-in batch for a model-only check: pixel-like values, input dtype."""
  try:
    spec = model.inputs[0]
    shape, dtype = tuple(spec.shape[1:]), spec.dtype
  except (AttributeError, IndexError, TypeError, ValueError) as e:
    raise UsageError("the model has no known input shape; pass data= so "
                     "the doctor can run it") from e
  if any(d is None for d in shape):
    raise UsageError(f"the model's input shape {shape} is not fully known; "
                     "pass data= so the doctor can run it")
  values = np.random.default_rng(0).uniform(0, 1, (batch_size,) + shape)
  if np.issubdtype(np.dtype(dtype), np.integer):
    return (values * 255).astype(dtype)
  return values.astype(dtype)


def _call(model: keras.Model, x: np.ndarray) -> np.ndarray | None:
  """The model's output on `x` as an array; None for multi-output models."""
  try:
    outputs = model(x, training=False)
  except Exception as e:  # the user's model rejected the batch: say so
    raise UsageError(f"the model cannot take this batch of shape {x.shape} "
                     f"and dtype {x.dtype}: {e}") from e
  if isinstance(outputs, (list, tuple, dict)):
    return None
  return np.asarray(keras.ops.convert_to_numpy(outputs))


def _is_image_batch(x: np.ndarray) -> bool:
  """(N, H, W, C) with a few channels, or grayscale (N, H, W)."""
  if x.ndim == 4:
    return x.shape[1] >= 8 and x.shape[2] >= 8 and x.shape[3] in (1, 3, 4)
  return x.ndim == 3 and x.shape[1] >= 8 and x.shape[2] >= 8


# --- pixels -----------------------------------------------------------------


def _check_pixels(model: keras.Model, x: np.ndarray) -> list[Finding]:
  """How the pixels look at the input of the first layer with weights."""
  probe = _first_kernel_input(model, x)
  if probe is _NO_VERDICT:
    return []
  integer = np.issubdtype(x.dtype, np.integer)
  if probe is None:  # a subclassed model: judge by the input and the layers
    if not _has_scaling_layer(model) and (integer or _max_abs(x) > 10):
      return [_raw_pixels_finding(integer, x, WARNING, seen_inside=False)]
    return []
  layer, h = probe
  if np.issubdtype(h.dtype, np.integer):
    return [_raw_pixels_finding(True, h, ERROR, layer=layer)]
  peak = _max_abs(h)
  if peak > 10:
    return [_raw_pixels_finding(integer, h, ERROR, layer=layer,
                                fed=x.dtype)]
  if _max_abs(x) <= 1.0 and np.ptp(x) >= 0.5 and _channel_spread(h) < 0.1:
    return [_scaled_twice(model, layer, h)]
  return []


def _channel_spread(h: np.ndarray) -> float:
  """The largest spread (max - min) of any one channel (last axis) of `h`.

  Per channel: a standardization with each channel's own mean (CIFAR-10's
  differ by 11 of 255) offsets the channels from one another, so over all
  of them 0-1 pixels scaled twice still spread 0.3.
  """
  return float(np.max(np.ptp(h.reshape(-1, h.shape[-1]), axis=0)))


def _scaled_twice(model: keras.Model, layer: keras.layers.Layer,
                  h: np.ndarray) -> Finding:
  """The finding for 0-1 pixels fed to a model that scales 0-255 itself.

  Their spread at `layer` is then 1/255 of the normal one (under 0.1, where
  0-1 or standardized pixels span 1 or more), whatever offset the model's
  scaling adds (Standardize's mean). A uint8 Input also truncates them to 0
  or 1: the images are black, and the net cannot learn.
  """
  integer = _integer_input(model)
  cause = ("the model takes uint8 0-255 pixels, so 0-1 floats become 0 or 1"
           " (black images)" if integer else "they were scaled twice "
           "(divided by 255 on the host and again inside the model)")
  return Finding(
      "unnormalized-input", ERROR if integer else WARNING,
      f"pixels fed as 0-1 reach {layer.name} spanning only "
      f"{_channel_spread(h):.4f} in each channel: {cause}",
      "scale once: feed the 0-255 pixels as stored (drop the x / 255 on the "
      "host), or drop the model's own scaling (Rescaling(1/255), "
      "Standardize)")


def _integer_input(model: keras.Model) -> bool:
  """Whether the model's (first) Input takes integers, e.g. uint8 pixels."""
  try:
    dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
  except (AttributeError, IndexError, TypeError, ValueError):
    return False
  return "int" in dtype


# The first layer normalizes its own input, or is a nested pretrained net
# with preprocessing of its own: no verdict on the pixels.
_NO_VERDICT = object()


def _first_kernel_input(model: keras.Model, x: np.ndarray):
  """`(layer, its input on x)` for the first layer with a kernel.

  Returns `_NO_VERDICT` when a normalization layer or a nested functional
  model comes first, None when the model's structure cannot be followed
  (subclassed models).
  """
  if isinstance(model, keras.Sequential):
    try:  # as the model's call does: convert to the Input's dtype first
      x = keras.ops.cast(x, model.inputs[0].dtype)
    except (AttributeError, IndexError, ValueError):
      pass
    return _walk_sequential(model.layers, x)
  layers = getattr(model, "layers", None)
  if not layers or not getattr(model, "inputs", None):
    return None
  for layer in layers:
    if _normalizes(layer) or (isinstance(layer, keras.Model)
                              and layer.trainable_weights):
      return _NO_VERDICT
    if _has_kernel(layer):
      try:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        tap = keras.Model(inputs, layer.input)
        return layer, _numpy(tap(x, training=False))
      except (ValueError, AttributeError, TypeError):
        return _NO_VERDICT
  return _NO_VERDICT


def _walk_sequential(layers: Sequence[keras.layers.Layer], h):
  """Applies `layers` to `h` up to the first with a kernel (see above)."""
  for layer in layers:
    if isinstance(layer, keras.Sequential):
      found = _walk_sequential(layer.layers, h)
      if found is not None:
        return found
    elif _normalizes(layer) or isinstance(layer, keras.Model):
      return _NO_VERDICT
    elif _has_kernel(layer):
      return layer, _numpy(h)
    h = layer(h, training=False)
  return None


def _numpy(t) -> np.ndarray:
  return np.asarray(keras.ops.convert_to_numpy(t))


def _has_kernel(layer: keras.layers.Layer) -> bool:
  return any(hasattr(layer, a) for a in ("kernel", "depthwise_kernel",
                                         "embeddings"))


def _normalizes(layer: keras.layers.Layer) -> bool:
  return type(layer).__name__ in _NORMALIZING_LAYERS


def _has_scaling_layer(model: keras.Model) -> bool:
  names = {type(layer).__name__ for layer in _all_layers(model)}
  return bool(names & {"Rescaling", "Normalization", "Standardize",
                       *_NORMALIZING_LAYERS})


def _max_abs(a: np.ndarray) -> float:
  a = np.asarray(a, np.float64)
  a = a[np.isfinite(a)]
  return float(np.max(np.abs(a))) if a.size else 0.0


def _raw_pixels_finding(integer: bool, h: np.ndarray, severity: str, *,
                        layer: keras.layers.Layer | None = None,
                        seen_inside: bool = True, fed=None) -> Finding:
  """The finding for pixels `h` that reach `layer` unscaled.

  Args:
    integer: the batch was fed as integers (uint8 images).
    h: the pixels as they reach the layer.
    severity: ERROR when seen at the layer, WARNING when guessed.
    layer: the first layer with weights; None for a subclassed model.
    seen_inside: False when the model's inside could not be followed.
    fed: the dtype the batch was fed as; `h.dtype` when None.
  """
  where = f"the first layer with weights ({layer.name})" if layer else (
      "the model")
  span = f"{np.min(h):g}..{np.max(h):g}"
  unsure = ("" if seen_inside else "; the model is subclassed, so I could "
            "not see inside: ignore this if call() scales the pixels")
  if integer:
    return Finding(
        "integer-input", severity,
        f"{fed or h.dtype} pixels ({span}) reach {where} unscaled: Keras "
        f"casts them to 0-255 floats{unsure}",
        "scale inside the model: make keras.layers.Rescaling(1/255) its "
        "first layer (fastcifar.models.Standardize also centres them)")
  return Finding(
      "unnormalized-input", severity,
      f"pixels reach {where} as {span}, not 0-1{unsure}",
      "divide the images by 255 (x = x.astype('float32') / 255), or make "
      "keras.layers.Rescaling(1/255) the model's first layer")


# --- model structure --------------------------------------------------------


def _all_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
  """Every layer inside `model`, nested ones included."""
  flatten = getattr(model, "_flatten_layers", None)
  if flatten is not None:
    return list(flatten(include_self=False, recursive=True))
  found = []
  for layer in getattr(model, "layers", []):
    found += [layer, *_all_layers(layer)]
  return found


def _check_layers(model: keras.Model) -> list[Finding]:
  names = [type(layer).__name__ for layer in _all_layers(model)]
  spatial = ("Conv", "Attention", "Embedding", "Pooling", "Patch")
  if not names or any(s in n for n in names for s in spatial):
    return []
  if "Dense" not in names:
    return []  # not a recognisable dense-only net: say nothing
  return [Finding(
      "no-conv-on-images", WARNING,
      "the model has no convolutions: a dense-only net on images ignores "
      "their 2-D structure and tops out near 50% on CIFAR-10",
      "put convolutions first, e.g. the layers of "
      "fastcifar.models.seed_cnn_layers(num_classes): Conv2D(32, 3, "
      "padding='same', activation='relu') ... MaxPooling2D ... Flatten, Dense")]


def _output_kind(model: keras.Model, outputs: np.ndarray) -> str:
  """'softmax', 'sigmoid' or 'logits': the last layer's, else by the values."""
  layer = _last_layer(model)
  activation = None
  if layer is not None:
    if type(layer).__name__ == "Softmax":
      activation = "softmax"
    else:
      fn = getattr(layer, "activation", None)
      activation = getattr(fn, "__name__", None)
  if activation in ("softmax", "sigmoid"):
    return activation
  if activation in ("linear", "log_softmax"):  # log-probabilities are logits
    return "logits"
  values = np.asarray(outputs, np.float64)
  if values.min() >= -1e-6 and values.max() <= 1 + 1e-6:
    if values.shape[-1] > 1 and np.allclose(values.sum(-1), 1, atol=2e-2):
      return "softmax"
    return "sigmoid"
  return "logits"


def _last_layer(model: keras.Model) -> keras.layers.Layer | None:
  layers = getattr(model, "layers", None)
  if not layers:
    return None
  last = layers[-1]
  return _last_layer(last) if isinstance(last, keras.Model) else last


def _check_output_dtype(outputs: np.ndarray) -> list[Finding]:
  dtype = str(outputs.dtype)
  if dtype not in ("float16", "bfloat16"):
    return []
  loss = ("probabilities under 6e-8 become 0" if dtype == "float16" else
          "probabilities keep 3 significant digits")
  return [Finding(
      "float16-output", WARNING,
      f"the model outputs {dtype}: the softmax and the loss lose precision "
      f"({loss}) and training can stall",
      "give the last layer dtype='float32', e.g. Dense(10, "
      "activation='softmax', dtype='float32'); mixed precision keeps the "
      "speed of the layers before it")]


# --- loss and labels --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Loss:
  name: str
  kind: str  # 'categorical', 'sparse', 'binary' or 'other'
  from_logits: bool


def _loss_info(model: keras.Model) -> _Loss | None:
  """What the compiled loss expects; None when not compiled or multi-output."""
  loss = getattr(model, "loss", None)
  if loss is None or isinstance(loss, (list, tuple, dict)):
    return None
  if isinstance(loss, str):
    name = loss
    from_logits = False
  elif isinstance(loss, keras.losses.Loss):
    name = type(loss).__name__
    from_logits = bool(loss.get_config().get("from_logits", False))
  else:
    name = getattr(loss, "__name__", type(loss).__name__)
    from_logits = False
  key = name.lower().replace("_", "")
  if "hinge" in key:
    kind = "other"  # hinge losses take raw scores and any label form
  elif "sparsecategorical" in key:
    kind = "sparse"
  elif "categorical" in key or key in ("kld", "kldivergence",
                                       "kullbackleiblerdivergence"):
    kind = "categorical"
  elif "binary" in key:
    kind = "binary"
  else:
    kind = "other"
  return _Loss(name, kind, from_logits)


def _check_logits(loss: _Loss, kind: str) -> list[Finding]:
  if loss.kind == "other":
    return []
  if loss.from_logits and kind in ("softmax", "sigmoid"):
    return [Finding(
        "logits-mismatch", ERROR,
        f"the loss {loss.name} has from_logits=True but the model already "
        f"ends in a {kind}: the loss applies a second {kind} and the "
        "gradients nearly vanish",
        f"drop from_logits=True from the loss (keep the {kind}), or end the "
        "model in a linear layer (activation=None) and keep from_logits=True")]
  if not loss.from_logits and kind == "logits":
    return [Finding(
        "logits-mismatch", ERROR,
        f"the model outputs raw logits but the loss {loss.name} expects "
        "probabilities (from_logits=False): it clips the logits to (0, 1) "
        "and learns little or nothing",
        f"pass from_logits=True, e.g. keras.losses.{_loss_class(loss)}"
        "(from_logits=True), or give the last layer activation='softmax'")]
  return []


def _loss_class(loss: _Loss) -> str:
  return {"sparse": "SparseCategoricalCrossentropy",
          "categorical": "CategoricalCrossentropy",
          "binary": "BinaryCrossentropy"}[loss.kind]


def _label_form(y: np.ndarray, num_classes: int) -> str:
  """'ids', 'id_column', 'one_hot', 'multi_hot' or 'other'."""
  numeric = np.issubdtype(y.dtype, np.number) or y.dtype == bool
  if not numeric:
    return "other"
  values = y.astype(np.float64)
  if y.ndim >= 2 and y.shape[-1] == num_classes and num_classes > 1:
    if values.min() >= 0 and values.max() <= 1:
      return ("one_hot" if np.allclose(values.sum(-1), 1, atol=1e-3)
              else "multi_hot")
  integral = np.all(values == np.round(values))
  if integral and y.ndim == 1:
    return "ids"
  if integral and y.ndim == 2 and y.shape[-1] == 1:
    return "id_column"
  return "other"


def _check_labels(y: np.ndarray, loss: _Loss, kind: str, num_classes: int,
                  one_hot_on_device: bool) -> list[Finding]:
  """Labels against the loss, as the loss will receive them."""
  form = _label_form(y, num_classes)
  shape = f"shape (N, {', '.join(str(d) for d in y.shape[1:])})" if (
      y.ndim > 1) else "shape (N,)"
  findings = []
  if form in ("ids", "id_column"):
    findings += _check_label_range(y, num_classes)
  if one_hot_on_device:
    if form == "id_column":
      return findings + [Finding(
          "label-shape", ERROR,
          f"labels have {shape}: the one-hot on the device makes them "
          f"(N, 1, {num_classes}), which does not match the (N, "
          f"{num_classes}) output",
          "flatten the labels: y = y.reshape(-1)")]
    if form == "one_hot":
      return findings + [Finding(
          "label-loss-mismatch", ERROR,
          f"labels are already one-hot ({shape}) but the training step "
          "one-hots them again",
          "pass class ids: y = y.argmax(-1)")]
    if form == "ids":
      form = "one_hot"  # what the loss receives: one-hot (N, num_classes)
  if loss.kind == "categorical" and form in ("ids", "id_column"):
    findings.append(Finding(
        "label-loss-mismatch", ERROR,
        f"labels are class ids ({shape}) but the loss {loss.name} expects "
        f"one-hot vectors of width {num_classes}",
        "use loss='sparse_categorical_crossentropy' and keep the ids, or "
        f"one-hot them: y = keras.utils.to_categorical(y, {num_classes})"))
  elif loss.kind == "sparse" and form in ("one_hot", "multi_hot"):
    findings.append(Finding(
        "label-loss-mismatch", ERROR,
        f"labels are one-hot ({shape}) but the loss {loss.name} expects "
        "class ids of shape (N,)",
        "use loss='categorical_crossentropy' and keep the one-hot labels, "
        "or pass class ids: y = y.argmax(-1)"))
  elif loss.kind == "binary" and num_classes > 1 and kind == "softmax":
    findings.append(Finding(
        "label-loss-mismatch", ERROR,
        f"the loss {loss.name} scores each of the {num_classes} softmax "
        "outputs as a separate yes/no, and 'accuracy' becomes binary accuracy "
        "(90% while predicting nothing)",
        "use loss='categorical_crossentropy' (one-hot labels) or "
        "'sparse_categorical_crossentropy' (class ids)"))
  elif loss.kind == "sparse" and form == "id_column":
    findings.append(Finding(
        "label-shape", WARNING,
        f"labels have {shape}: Keras's loss copes, but comparing predictions "
        "with them yourself (np.argmax(p, 1) == y) broadcasts to (N, N) and "
        "reads chance accuracy",
        "flatten the labels once, where they are loaded: y = y.reshape(-1)"))
  elif form == "other":
    findings.append(Finding(
        "label-shape", ERROR,
        f"labels have {shape}, which fits neither class ids (N,) nor one-hot "
        f"(N, {num_classes}) for the model's {num_classes} outputs",
        f"give class ids of shape (N,) in [0, {num_classes}) or one-hot "
        f"labels of shape (N, {num_classes}); if the number of classes is "
        "wrong, change the width of the last Dense layer"))
  return findings


def _check_label_range(y: np.ndarray, num_classes: int) -> list[Finding]:
  width = max(num_classes, 2)  # one sigmoid output takes ids 0 and 1
  low, high = int(np.min(y)), int(np.max(y))
  if low >= 0 and high < width:
    return []
  return [Finding(
      "label-range", ERROR,
      f"labels run {low}..{high} but the model has {num_classes} outputs "
      f"(ids 0..{width - 1})",
      f"make the last layer Dense({high + 1}) if there are {high + 1} "
      "classes, or renumber labels from 0 (e.g. y = y - 1)")]


def _check_single_class(y: np.ndarray, num_classes: int,
                        from_dataset: bool) -> list[Finding]:
  form = _label_form(y, num_classes)
  if form in ("one_hot", "multi_hot"):
    ids = np.argmax(y, -1)
  elif form in ("ids", "id_column"):
    ids = y.reshape(-1)
  else:
    return []
  if num_classes < 2 or len(ids) < 8 or len(np.unique(ids)) > 1:
    return []
  if from_dataset:
    return [Finding(
        "single-class-batch", ERROR,
        f"the first batch holds {len(ids)} examples of class {ids[0]} only: "
        "the data is sorted by class and not shuffled (or the shuffle "
        "buffer is small), so each step learns one class",
        "shuffle before batching with a buffer as large as the data: "
        "ds = ds.shuffle(num_examples).batch(batch_size) "
        "(image_dataset_from_directory: shuffle=True)")]
  return [Finding(
      "single-class-batch", WARNING,
      f"the first {len(ids)} labels are all class {ids[0]}: the arrays are "
      "sorted by class; fit(shuffle=True) copes, but validation_split takes "
      "the last examples unshuffled (one class) and a tf.data pipeline "
      "built from them trains on one class at a time",
      "shuffle once after loading: p = np.random.permutation(len(x)); "
      "x, y = x[p], y[p]")]


# --- optimizer and metrics --------------------------------------------------


def _check_learning_rate(model: keras.Model) -> list[Finding]:
  optimizer = getattr(model, "optimizer", None)
  optimizer = getattr(optimizer, "inner_optimizer", optimizer)
  if optimizer is None:
    return []
  name = type(optimizer).__name__
  rate = _peak_learning_rate(optimizer)
  if rate is None:
    return []
  # (warn at, error at, too low under, usual, example). Adam at 1e-2 left
  # the textbook CIFAR-10 CNN at chance in a measured run; 5e-3 is 5x usual.
  if name in _ADAPTIVE_OPTIMIZERS:
    warn, error, low, usual, example = 5e-3, 1e-2, 1e-5, "1e-3", "1e-3"
  elif name == "Lion":
    warn, error, low, usual, example = 1e-3, 3e-3, 1e-6, "1e-4", "1e-4"
  elif name == "SGD":
    warn, error, low = 0.5, 2.0, 1e-4
    usual, example = "0.01-0.1 with momentum 0.9", "0.05, momentum=0.9"
  else:
    return []  # no rule of thumb worth stating
  fix = (f"use about {usual}: keras.optimizers.{name}"
         f"(learning_rate={example})")
  if name == "Adam":  # fastcifar's own optimizer
    fix += " (fastcifar.train: --learning_rate=2e-3, its default)"
  rate *= 1 + 1e-6  # Adam(0.01) holds float32 0.0099999998
  if rate >= warn:
    return [Finding(
        "learning-rate", ERROR if rate >= error else WARNING,
        f"learning rate {rate:.3g} is high for {name}: the loss diverges or "
        "the ReLUs die and accuracy sits at chance", fix)]
  if rate < low:
    return [Finding(
        "learning-rate", WARNING,
        f"learning rate {rate:.3g} is low for {name}: the net will barely "
        "move in the epochs you give it", fix)]
  return []


def _peak_learning_rate(optimizer: keras.optimizers.Optimizer
                        ) -> float | None:
  """The largest rate the schedule reaches (warm-ups start near 0)."""
  rate = getattr(optimizer, "_learning_rate", None)
  if rate is None:
    return None
  if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
    return max(float(rate(step)) for step in (0, 10, 100, 1_000, 10_000))
  if callable(rate) and not isinstance(rate, keras.Variable):
    return float(rate())
  return float(keras.ops.convert_to_numpy(rate))


def _check_metrics(model: keras.Model) -> list[Finding]:
  compiled = getattr(model, "_compile_metrics", None)
  metrics = getattr(compiled, "_user_metrics", None)
  if not isinstance(metrics, (list, tuple)):
    return []
  for metric in metrics:
    # Exactly Accuracy, class or instance; other accuracies are fine.
    if keras.metrics.Accuracy in (metric, type(metric)):
      return [Finding(
          "accuracy-metric", ERROR,
          "keras.metrics.Accuracy() checks that predictions equal the labels "
          "exactly: on probabilities it reads ~0 however well the net learns",
          "use metrics=['accuracy'] (Keras picks the categorical or sparse "
          "accuracy that fits the labels)")]
  return []
