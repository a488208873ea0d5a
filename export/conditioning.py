"""A UNet's I/O declaration from its config, and its conditioning declaration from its folder.

:func:`io_for` turns a diffusers config into the engine's inputs (``runtime.io_spec``): a
class-conditional ``UNet2DModel`` (``num_class_embeds``) takes ``class_labels``; a
``UNet2DConditionModel`` takes ``encoder_hidden_states [batch, sequence, dim]`` (``dim`` from the
config; the sequence length is the export's ``--sequence-length``: ``N`` or ``MIN:OPT:MAX``) and
``class_labels`` when it has a class embedding table. Options whose inputs we do not serve are
refused here, before any work, with one line.

:func:`read_declaration` reads ``conditioning.json`` from the model's folder (see
:mod:`runtime.conditioning`): the label names, a label → embedding table, and what "unconditional"
means (null class, null embedding). The export copies the arrays it names beside the engine and
records them, hashed, in the manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.conditioning import DECLARATION, Conditioning, read_float_array
from runtime.errors import DeployError, ManifestError
from runtime.io_spec import SequenceRange, UNetIO
from runtime.jsonio import read_json_object
from runtime.manifest import sha256_file

from .load import ModelSource, ModelSourceError

_DECLARATION_KEYS = ("labels", "label_embeddings", "unconditional")
_UNCONDITIONAL_KEYS = ("class_label", "embedding")


def parse_sequence(text: str) -> SequenceRange:
    """``--sequence-length``: ``N`` (one fixed length) or ``MIN:OPT:MAX`` (a dynamic axis)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*:\s*(\d+)\s*)?", text)
    if not match:
        raise DeployError(f"--sequence-length must be N or MIN:OPT:MAX (whole numbers), got {text!r}")
    lo, opt, hi = (int(g) for g in match.groups(default=match.group(1)))
    try:
        return SequenceRange(lo, opt, hi)
    except ValueError as exc:
        raise DeployError(f"--sequence-length {text}: {exc}") from None


def _refuse(model: ModelSource, option: str, value: Any, why: str) -> ModelSourceError:
    return ModelSourceError(f"{model.folder / 'config.json'}: {option}={value!r} is not supported ({why}); "
                            "ddpm-deploy exports UNets whose inputs are sample, timestep, class labels and "
                            "encoder hidden states")


def cross_attention_dim(model: ModelSource) -> int | None:
    """The last axis of encoder_hidden_states (None: not a cross-attention UNet)."""
    config = model.config
    if model.unet_class != "UNet2DConditionModel":
        return None
    if config.get("encoder_hid_dim") is not None:  # a projection in front of the blocks
        return int(config["encoder_hid_dim"])
    dim = config.get("cross_attention_dim", 1280)
    if isinstance(dim, (list, tuple)):
        if len(set(dim)) != 1:
            raise _refuse(model, "cross_attention_dim", dim, "blocks of different widths take different conditions")
        dim = dim[0]
    return int(dim)


def check_config(model: ModelSource) -> None:
    """Refuses config options that need inputs or behaviour the exported engine does not have."""
    config = model.config
    if config.get("class_embed_type") is not None:
        raise _refuse(model, "class_embed_type", config["class_embed_type"],
                      "its class input is not a label; class embeddings of type null (num_class_embeds) are")
    if model.unet_class == "UNet2DConditionModel":
        for option, why in (("addition_embed_type", "it takes added conditions (text_embeds, time_ids, image_embeds)"),
                            ("time_cond_proj_dim", "it takes a guidance embedding (timestep_cond)")):
            if config.get(option) is not None:
                raise _refuse(model, option, config[option], why)
        if config.get("encoder_hid_dim_type") not in (None, "text_proj"):
            raise _refuse(model, "encoder_hid_dim_type", config["encoder_hid_dim_type"], "it takes image embeddings")
        if config.get("attention_type", "default") != "default":
            raise _refuse(model, "attention_type", config["attention_type"], "it takes GLIGEN boxes")
        cross_attention_dim(model)


def refuse_unservable(model: ModelSource) -> None:
    """Every config refusal (conditioning's first: their messages say more, then the option walk); cheap, so the
    export runs it before anything else, warnings included."""
    from .family import check_options

    check_config(model)
    check_options(model)


def declared_sequence(declaration: Declaration | None) -> SequenceRange | None:
    """The token count of the declared embeddings (a fixed length), if the folder declares any."""
    arrays = [a for a in (declaration.label_embeddings, declaration.null_embedding) if a is not None] if declaration else []
    if not arrays:
        return None
    lengths = {a.shape[-2] for a in arrays}
    if len(lengths) != 1:
        raise ModelSourceError(f"the declared embeddings have different token counts ({sorted(lengths)}); "
                               "fix the model's conditioning.json")
    (n,) = lengths
    return SequenceRange(n, n, n)


def io_for(model: ModelSource, sequence: SequenceRange | None = None, declaration: Declaration | None = None,
           scheduler: dict[str, Any] | None = None) -> UNetIO:
    """The engine's I/O declaration for the model and its scheduler config (``scheduler``: what the timestep
    means; default DDPM's training steps); raises ModelSourceError (one line) for what we cannot serve."""
    from .family import timestep_domain

    config = model.config
    refuse_unservable(model)
    domain, timestep_dtype = timestep_domain(model, scheduler or {})
    size = config.get("sample_size")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    dim = cross_attention_dim(model)
    if dim is not None and sequence is None:
        sequence = declared_sequence(declaration)
        if sequence is None:
            raise ModelSourceError(f"{model.source} is a cross-attention UNet: pass --sequence-length N (the tokens of "
                                   "its condition) or MIN:OPT:MAX for a dynamic length")
    if dim is None and sequence is not None:
        raise ModelSourceError(f"--sequence-length applies to cross-attention UNets only; {model.source} is a {model.unet_class} "
                               "without encoder_hidden_states")
    classes = config.get("num_class_embeds")
    image_channels = model.image_channels
    if image_channels is not None and (classes or dim is not None):
        raise ModelSourceError(f"{model.source} takes an image and a class or cross-attention condition; only "
                               "image-conditioned UNets without another condition are served")
    return UNetIO.for_model(config["in_channels"] - (image_channels or 0), config["out_channels"], int(height), int(width),
                            num_classes=int(classes) if classes else None, cross_attention_dim=dim, sequence=sequence,
                            timestep=domain, timestep_dtype=timestep_dtype, image_channels=image_channels)


@dataclass(frozen=True)
class Declaration:
    """``conditioning.json`` of a model folder, its arrays loaded."""

    path: Path
    labels: list[str] | None
    label_embeddings: np.ndarray | None
    label_embeddings_file: str | None
    null_class: int | None
    null_embedding: np.ndarray | None
    null_embedding_file: str | None

    def files(self) -> dict[str, Path]:
        """The arrays to copy beside the engine: file name → source path."""
        names = [n for n in (self.label_embeddings_file, self.null_embedding_file) if n]
        return {name: self.path.parent / name for name in names}

    def manifest_section(self, copies: dict[str, Path]) -> dict[str, Any]:
        """The manifest's conditioning section, for ``copies`` (name → the copy beside the engine)."""

        def entry(name: str, arr: np.ndarray) -> dict[str, Any]:
            return {"file": name, "sha256": sha256_file(copies[name]), "shape": list(arr.shape)}

        section: dict[str, Any] = {}
        if self.labels is not None:
            section["labels"] = self.labels
        if self.label_embeddings_file:
            section["label_embeddings"] = entry(self.label_embeddings_file, self.label_embeddings)
        unconditional: dict[str, Any] = {}
        if self.null_class is not None:
            unconditional["class_label"] = self.null_class
        if self.null_embedding_file:
            unconditional["embedding"] = entry(self.null_embedding_file, self.null_embedding)
        if unconditional:
            section["unconditional"] = unconditional
        return section


def read_declaration(model: ModelSource) -> Declaration | None:
    """The model's ``conditioning.json`` (in the folder passed, or beside the UNet's config), or None."""
    path = next((p for p in (model.root / DECLARATION, model.folder / DECLARATION) if p.is_file()), None)
    if path is None:
        return None

    def bad(what: str) -> ModelSourceError:
        return ModelSourceError(f"{path}: {what}; see runtime/conditioning.py for its fields")

    raw = read_json_object(path, missing=lambda: bad("does not exist"), unreadable=lambda why: bad(f"cannot be read ({why})"))
    unknown = sorted(set(raw) - set(_DECLARATION_KEYS))
    if unknown:
        raise bad(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(_DECLARATION_KEYS)})")
    labels = raw.get("labels")
    if labels is not None and (not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels)):
        raise bad("'labels' must be a non-empty list of names")
    unconditional = raw.get("unconditional", {})
    if not isinstance(unconditional, dict) or set(unconditional) - set(_UNCONDITIONAL_KEYS):
        raise bad(f"'unconditional' must be an object with {' and/or '.join(_UNCONDITIONAL_KEYS)}")
    null_class = unconditional.get("class_label")
    if null_class is not None and (isinstance(null_class, bool) or not isinstance(null_class, int) or null_class < 0):
        raise bad("'unconditional.class_label' must be a whole number >= 0")

    def array(name: Any, what: str, ndim: int) -> np.ndarray:
        if not isinstance(name, str) or not name.endswith(".npy") or Path(name).name != name:
            raise bad(f"{what} must name a .npy file beside conditioning.json")
        try:
            return read_float_array(path.parent / name, ndim)
        except OSError as exc:
            raise bad(f"cannot read {what} {name} ({exc})") from None
        except ValueError as exc:
            raise bad(f"{what} {name} {exc}") from None

    table_file = raw.get("label_embeddings")
    null_file = unconditional.get("embedding")
    return Declaration(
        path=path,
        labels=labels,
        label_embeddings=array(table_file, "label_embeddings", 3) if table_file is not None else None,
        label_embeddings_file=table_file,
        null_class=null_class,
        null_embedding=array(null_file, "unconditional.embedding", 2) if null_file is not None else None,
        null_embedding_file=null_file,
    )


def check_declaration(declaration: Declaration, io: UNetIO) -> None:
    """The declaration against the engine's inputs (the runtime's own check, before anything is written)."""
    try:
        Conditioning(tuple(declaration.labels) if declaration.labels else None, declaration.label_embeddings,
                     declaration.null_class, declaration.null_embedding).check_against(io, ManifestError)
    except ManifestError as exc:
        raise ModelSourceError(f"{declaration.path} {exc}") from None
