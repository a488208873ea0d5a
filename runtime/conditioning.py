"""What a conditional engine is conditioned on, and how one request's condition becomes its engine rows.

A conditional UNet takes ``class_labels`` and/or ``encoder_hidden_states`` (see :mod:`runtime.io_spec`).
What the model's labels are, and what "unconditional" means for it, is declared in the model's folder
(``conditioning.json``), copied by the export into the manifest's ``conditioning`` section with the
files it names (hashed), and read here; it is never guessed:

* ``labels``: the names of the class labels (their count is the label range);
* ``label_embeddings``: a label → embedding table ``[labels, sequence, dim]`` (``.npy``), so a
  cross-attention model can be asked for a class;
* ``unconditional``: ``{"class_label": K}`` (the null class) and/or ``{"embedding": FILE}`` (the null
  embedding ``[sequence, dim]``), what classifier-free guidance and condition-less requests use.

:func:`request_rows` turns a request (``class_labels``, ``embeddings``, ``negative_embeddings`` and its
guidance; or ``conditioning``, the engine inputs outright) into the engine's conditioning inputs. With
guidance (``SampleRequest.guidance`` active) each image takes two rows of the engine call: its
unconditional row (null class, given negative embeddings, or the null embedding) then its conditional
one, all unconditional rows first as diffusers' pipelines concatenate them; the denoiser combines their
outputs (:meth:`runtime.guidance.Guidance.combine`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ManifestError
from .io_spec import CLASS_LABELS, ENCODER_HIDDEN_STATES, IMAGE_CONDITION, UNetIO

DECLARATION = "conditioning.json"  # in the model's folder


def read_float_array(path: Path, ndim: int) -> np.ndarray:
    """A finite float array of ``ndim`` dimensions from a ``.npy`` file (no pickles), as contiguous float32.
    Raises OSError when the file cannot be read as one, ValueError (saying what it holds) otherwise."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise OSError(str(exc)) from None
    if arr.ndim != ndim or arr.dtype.kind != "f" or not np.isfinite(arr).all():
        raise ValueError(f"must be a finite float array of {ndim} dimensions, got {arr.dtype} {list(arr.shape)}")
    return np.ascontiguousarray(arr, dtype=np.float32)


@dataclass(frozen=True)
class Conditioning:
    """The manifest's ``conditioning`` section with its arrays loaded and checked."""

    labels: tuple[str, ...] | None = None
    label_embeddings: np.ndarray | None = None  # [labels, sequence, dim] float32
    null_class: int | None = None
    null_embedding: np.ndarray | None = None  # [sequence, dim] float32

    @classmethod
    def from_manifest(cls, section: Mapping[str, Any] | None, folder: Path, io: UNetIO,
                      check_hash=None) -> Conditioning:
        """Reads the section (files relative to ``folder``; ``check_hash(path, sha256)`` verifies each) and
        checks it against the engine's I/O. Raises ManifestError."""
        section = dict(section or {})

        def bad(what: str) -> ManifestError:
            return ManifestError(f"the manifest's conditioning section {what}; re-export the model")

        def array(entry: Any, what: str, ndim: int) -> np.ndarray:
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "/" in entry["file"]:
                raise bad(f"names no file for {what}")
            path = folder / entry["file"]
            if check_hash is not None:
                check_hash(path, entry.get("sha256"))
            try:
                return read_float_array(path, ndim)
            except OSError as exc:
                raise ManifestError(f"cannot read {path} ({exc}); re-export the model") from None
            except ValueError as exc:
                raise bad(f"points {what} at {path}, which {exc}") from None

        labels = section.get("labels")
        if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or not labels):
            raise bad("has labels that are not a list of names")
        table = array(section["label_embeddings"], "label_embeddings", 3) if "label_embeddings" in section else None
        unconditional = section.get("unconditional") or {}
        if not isinstance(unconditional, dict):
            raise bad("has an unconditional entry that is not an object")
        null_class = unconditional.get("class_label")
        null_embedding = array(unconditional["embedding"], "the null embedding", 2) if "embedding" in unconditional else None
        out = cls(tuple(labels) if labels else None, table, null_class, null_embedding)
        out.check_against(io, bad)
        return out

    def check_against(self, io: UNetIO, bad) -> None:
        """Against the engine's inputs; raises ``bad(what)``."""
        ehs = io.input(ENCODER_HIDDEN_STATES)
        if self.null_class is not None:
            if io.num_classes is None:
                raise bad("declares a null class for an engine without class_labels")
            if isinstance(self.null_class, bool) or not isinstance(self.null_class, int) or not 0 <= self.null_class < io.num_classes:
                raise bad(f"declares null class {self.null_class!r}, outside the engine's 0..{io.num_classes - 1}")
        for what, arr in (("label embeddings", self.label_embeddings), ("null embedding", self.null_embedding)):
            if arr is None:
                continue
            if ehs is None:
                raise bad(f"has {what} for an engine without encoder_hidden_states")
            if arr.shape[-1] != ehs.shape[-1] or not io.sequence.min <= arr.shape[-2] <= io.sequence.max:
                raise bad(f"has {what} of shape {arr.shape}; the engine takes [{io.sequence}, {ehs.shape[-1]}] per image")
        if self.labels is not None:
            if self.label_embeddings is not None and len(self.labels) != len(self.label_embeddings):
                raise bad(f"names {len(self.labels)} labels but its table has {len(self.label_embeddings)} rows")
            if io.num_classes is not None and len(self.labels) > io.num_classes:
                raise bad(f"names {len(self.labels)} labels; the engine has {io.num_classes} classes")

    def num_labels(self, io: UNetIO) -> int | None:
        """How many class labels a request may name (None: the engine takes none)."""
        if io.num_classes is not None:
            return len(self.labels) if self.labels is not None else io.num_classes
        if self.label_embeddings is not None:
            return len(self.label_embeddings)
        return None

    def can_guide(self, io: UNetIO) -> bool:
        """Whether an unconditional row is declared for every conditioning input the engine takes."""
        names = {t.name for t in io.conditioning_inputs}
        return bool(names) and (CLASS_LABELS not in names or self.null_class is not None) and (
            ENCODER_HIDDEN_STATES not in names or self.null_embedding is not None)

    def describe(self, io: UNetIO) -> dict[str, Any]:
        """What the engine takes, for users (the service's /v1/models)."""
        out: dict[str, Any] = {"inputs": [t.name for t in io.conditioning_inputs]}
        if (n := self.num_labels(io)) is not None:
            out["class_labels"] = list(self.labels) if self.labels else f"0..{n - 1}"
        if (ehs := io.input(ENCODER_HIDDEN_STATES)) is not None:
            out["embeddings"] = f"[{io.sequence}, {ehs.shape[-1]}] float32 per image (or one for all)"
        out["guidance"] = self.can_guide(io)
        return out


def declared_files(section: Mapping[str, Any] | None) -> list[str]:
    """The files a manifest's conditioning section names (they travel with the engine)."""
    section = section or {}
    entries = [section.get("label_embeddings"), (section.get("unconditional") or {}).get("embedding")]
    return [e["file"] for e in entries if isinstance(e, dict) and isinstance(e.get("file"), str)]


def _per_image(arr: np.ndarray, count: int, what: str) -> np.ndarray:
    """[sequence, dim] or [1 | count, sequence, dim] → [count, sequence, dim]."""
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[0] not in (1, count):
        raise InputError(f"{what} has {arr.shape[0]} rows for {count} image(s); give one per image or one for all")
    return np.ascontiguousarray(np.broadcast_to(arr, (count, *arr.shape[1:])))


def request_rows(io: UNetIO, conditioning: Conditioning, request) -> dict[str, np.ndarray]:
    """The engine's conditioning inputs for ``request``'s engine rows (a :class:`runtime.requests.SampleRequest`;
    two rows per image when its guidance is active), checked against the engine; raises InputError with one line."""
    count = request.count
    names = {t.name for t in io.conditioning_inputs}
    guided = request.guidance.active
    labels, embeddings, negative = request.class_labels, request.embeddings, request.negative_embeddings
    high_level = [n for n, v in (("class_labels", labels), ("embeddings", embeddings),
                                 ("negative_embeddings", negative)) if v is not None]
    if request.conditioning is not None:
        if high_level or guided:
            raise InputError(f"give conditioning (the engine's inputs) or {', '.join(high_level or ['guidance_scale'])}, not both")
        return _engine_inputs(io, request.conditioning, count)
    if not names:
        if high_level or guided:
            raise InputError(f"this model is unconditional: it takes no {(high_level or ['guidance_scale'])[0]}")
        return {}
    if IMAGE_CONDITION in names:
        return _image_rows(io, request, high_level or (["guidance_scale"] if guided else []))
    if guided and labels is None and embeddings is None:
        raise InputError("guidance_scale > 1 needs a condition to steer towards: give class_labels or embeddings")
    for name, value in (("embeddings", embeddings), ("negative_embeddings", negative)):
        if value is not None and ENCODER_HIDDEN_STATES not in names:
            raise InputError(f"this model has no cross-attention input: it takes no {name}; give class_labels")
    if guided and CLASS_LABELS in names and conditioning.null_class is None:
        raise InputError("this model declares no null class, so it cannot be guided; use guidance_scale 1")
    if guided and ENCODER_HIDDEN_STATES in names and negative is None and conditioning.null_embedding is None:
        raise InputError("this model declares no null embedding: give negative_embeddings to guide it, or use guidance_scale 1")
    if negative is not None and not guided:
        raise InputError("negative_embeddings are used by guidance only; give a guidance_scale above 1")
    if labels is not None:
        limit = conditioning.num_labels(io)
        if limit is None:
            raise InputError("this model takes no class labels (it has no class input and no label embedding table); "
                             "give embeddings")
        if len(labels) not in (1, count):
            raise InputError(f"class_labels has {len(labels)} entries for {count} image(s); give one per image or one for all")
        bad = [x for x in labels if not 0 <= x < limit]
        if bad:
            raise InputError(f"class label {bad[0]} is out of range; this model's labels are 0..{limit - 1}")
        labels = np.broadcast_to(np.asarray(labels, dtype=np.int64), (count,)).copy()

    cond: dict[str, np.ndarray] = {}
    uncond: dict[str, np.ndarray] = {}
    if CLASS_LABELS in names:
        null = conditioning.null_class
        if labels is None and null is None:
            raise InputError(f"this model needs class_labels (0..{conditioning.num_labels(io) - 1}); it declares no "
                             "null class to sample without one")
        cond[CLASS_LABELS] = labels if labels is not None else np.full(count, null, dtype=np.int64)
        if guided:
            uncond[CLASS_LABELS] = np.full(count, null, dtype=np.int64)
    if ENCODER_HIDDEN_STATES in names:
        ehs = io.input(ENCODER_HIDDEN_STATES)
        if embeddings is not None:
            cond[ENCODER_HIDDEN_STATES] = _checked_embeddings(io, embeddings, count, "embeddings")
        elif labels is not None and CLASS_LABELS not in names:
            cond[ENCODER_HIDDEN_STATES] = conditioning.label_embeddings[labels]
        elif conditioning.null_embedding is not None:
            cond[ENCODER_HIDDEN_STATES] = _per_image(conditioning.null_embedding, count, "the null embedding")
        else:
            raise InputError(f"this model needs embeddings ([{io.sequence}, {ehs.shape[-1]}] per image); it declares "
                             "no null embedding to sample without one")
        if guided:
            source = negative if negative is not None else conditioning.null_embedding
            uncond[ENCODER_HIDDEN_STATES] = _checked_embeddings(io, source, count, "negative_embeddings")
            if uncond[ENCODER_HIDDEN_STATES].shape[1] != cond[ENCODER_HIDDEN_STATES].shape[1]:
                raise InputError(
                    f"negative_embeddings have {uncond[ENCODER_HIDDEN_STATES].shape[1]} tokens and the condition "
                    f"{cond[ENCODER_HIDDEN_STATES].shape[1]}; guidance runs both in one engine call: give equal lengths")
    if not guided:
        return cond
    return {name: np.concatenate([uncond[name], cond[name]]) for name in cond}


def _image_rows(io: UNetIO, request, others: list[str]) -> dict[str, np.ndarray]:
    """An image-conditioned UNet's rows (super-resolution): the request's image, one per image or one for all."""
    from .image_input import shape_text

    want = io.input(IMAGE_CONDITION).shape[1:]
    if others:
        raise InputError(f"this model is conditioned on an image only: it takes no {others[0]}")
    if request.image is None:
        raise InputError(f"this model is conditioned on an image (the low-resolution image it upscales): give image, "
                         f"{shape_text(want)}")
    if request.strength is not None or request.inpainting:
        raise InputError("this model takes image as its condition (super-resolution); strength and mask_image do not "
                         "apply")
    if request.image.shape[1:] != tuple(want):
        raise InputError(f"image is {shape_text(request.image.shape[1:])}; this model takes {shape_text(want)} (the "
                         "low-resolution image it upscales; images are not resized)")
    return {IMAGE_CONDITION: np.ascontiguousarray(np.broadcast_to(request.image, (request.count, *want)))}


def _checked_embeddings(io: UNetIO, value: np.ndarray, count: int, what: str) -> np.ndarray:
    dim = io.input(ENCODER_HIDDEN_STATES).shape[-1]
    arr = _per_image(value, count, what)
    if arr.shape[-1] != dim or not io.sequence.min <= arr.shape[1] <= io.sequence.max:
        raise InputError(f"{what} must be [{io.sequence}, {dim}] per image (or [count, {io.sequence}, {dim}]), "
                         f"got {list(value.shape)}")
    return arr


def _engine_inputs(io: UNetIO, conditioning: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """The engine's conditioning inputs given outright (one row per image), checked against its declaration."""
    want = [t.name for t in io.conditioning_inputs]
    if set(conditioning) != set(want):
        raise InputError(f"this engine takes conditioning inputs: {', '.join(want) or 'none'}; "
                         f"got {', '.join(sorted(conditioning)) or 'none'}")
    out = {}
    for spec in io.conditioning_inputs:
        arr = np.ascontiguousarray(conditioning[spec.name], dtype=np.dtype(spec.dtype))
        tokens = arr.shape[1] if spec.name == ENCODER_HIDDEN_STATES and arr.ndim == 3 else None
        if arr.shape != spec.concrete(rows, tokens) or (tokens is not None and not io.sequence.min <= tokens <= io.sequence.max):
            want = [rows, str(io.sequence), spec.shape[-1]] if spec.name == ENCODER_HIDDEN_STATES else [rows]
            raise InputError(f"conditioning {spec.name!r} must have shape [{', '.join(map(str, want))}], got {list(arr.shape)}")
        if spec.name == CLASS_LABELS and ((arr < 0) | (arr >= io.num_classes)).any():
            raise InputError(f"conditioning {spec.name!r} holds labels outside 0..{io.num_classes - 1}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(f"conditioning {spec.name!r} holds NaN or Inf")
        out[spec.name] = arr
    return out
