"""Loading a diffusers UNet from a hub id or a local ``save_pretrained`` folder.

``UNet2DModel`` (unconditional, or class-conditional with ``num_class_embeds``) and
``UNet2DConditionModel`` (cross-attention: the condition enters its attention blocks as keys and
values). Everything about the network comes from its ``config.json`` (block types, channels,
``layers_per_block``, sample size); :func:`export.conditioning.io_for` refuses the options we cannot
serve before any work. safetensors weights are preferred; a folder with only a pickle
checkpoint (``.bin``) is refused unless the caller allows pickle, because unpickling runs code.
The scheduler config is read from diffusers' own ``scheduler_config.json`` when the model ships one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import DeployError, first_line
from runtime.jsonio import read_json_object
from runtime.manifest import sha256_file

CONFIG = "config.json"
SCHEDULER_CONFIG = "scheduler_config.json"
MODEL_INDEX = "model_index.json"
IMAGE_CONDITIONED = ("LDMSuperResolutionPipeline",)  # pipelines whose UNet takes an image after the sample's channels
SAFETENSORS = "diffusion_pytorch_model.safetensors"
PICKLE = "diffusion_pytorch_model.bin"
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
# Where diffusers puts the UNet and the scheduler: the folder itself, or a pipeline's subfolders.
# (A pipeline folder's own config.json is model_index-like; its UNet lives in unet/.)
UNET_DIRS = ("", "unet")
SCHEDULER_DIRS = ("", "scheduler")


class ModelSourceError(DeployError):
    """The model cannot be found, downloaded or is not a UNet we can load safely."""


@dataclass(frozen=True)
class ModelSource:
    source: str  # what the user passed
    root: Path  # the folder passed (or downloaded): a pipeline folder or the UNet's own
    folder: Path  # local folder holding config.json and the weights
    weights: Path
    config: dict[str, Any]
    scheduler_config: dict[str, Any] | None
    pipeline_class: str | None = None  # a pipeline folder's model_index.json _class_name (None: a UNet folder)

    @property
    def unet_class(self) -> str:
        return self.config["_class_name"]

    @property
    def image_channels(self) -> int | None:
        """An image-conditioned UNet's image channels (in_channels beyond out_channels); None for the others."""
        if self.pipeline_class not in IMAGE_CONDITIONED:
            return None
        return int(self.config.get("in_channels", 3)) - int(self.config.get("out_channels", 3))

    @property
    def uses_pickle(self) -> bool:
        return self.weights.suffix == ".bin"


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _download(repo_id: str, allow_pickle: bool) -> Path:
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = [f"{d}/{name}".lstrip("/") for d in UNET_DIRS for name in (CONFIG, SAFETENSORS)]
    patterns += [f"{d}/{SCHEDULER_CONFIG}".lstrip("/") for d in SCHEDULER_DIRS]
    patterns += ["conditioning.json", "*.npy"]  # a conditional model's declaration and its embeddings
    if allow_pickle:
        patterns += [f"{d}/{PICKLE}".lstrip("/") for d in UNET_DIRS]
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise ModelSourceError(
            f"cannot reach the model hub for {repo_id!r} and it is not in the local cache; download it elsewhere "
            f"(e.g. `DDPMPipeline.from_pretrained('{repo_id}').save_pretrained('DIR')`) and pass --model DIR"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelSourceError(
            f"cannot download {repo_id!r} from the hub: {first_line(exc)}; check the id or pass a local folder"
        ) from None


def _unet_folder(root: Path) -> Path:
    """A pipeline folder's ``unet/`` when there is one, else the folder itself."""
    for sub in reversed(UNET_DIRS):
        folder = root / sub if sub else root
        if (folder / CONFIG).is_file():
            return folder
    raise ModelSourceError(
        f"{root} has no {CONFIG} (looked in {', '.join(str(root / d) if d else str(root) for d in UNET_DIRS)}); "
        "pass a folder written by UNet2DModel.save_pretrained or a DDPMPipeline folder"
    )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    return read_json_object(
        path,
        missing=lambda: ModelSourceError(f"{what} {path} does not exist; re-save the model"),
        unreadable=lambda why: ModelSourceError(f"cannot read {what} {path}: {why}; fix or re-save the model"),
    )


def _scheduler_config(root: Path, unet_folder: Path) -> dict[str, Any] | None:
    for folder in (unet_folder, *(root / d if d else root for d in SCHEDULER_DIRS)):
        path = folder / SCHEDULER_CONFIG
        if path.is_file():
            return _read_json(path, "scheduler config")
    return None


def resolve(source: str, allow_pickle: bool = False) -> ModelSource:
    """Finds the UNet's config, weights and scheduler config for a hub id or a local folder."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"--model {source} is a file; pass the folder that holds {CONFIG} and the weights")
        root = path
    elif _looks_like_hub_id(source):
        root = _download(source, allow_pickle)
    else:
        raise ModelSourceError(f"--model {source}: no such folder, and it is not a hub id of the form owner/name")
    folder = _unet_folder(root)
    config = _read_json(folder / CONFIG, "model config")
    if config.get("_class_name") not in UNET_CLASSES:
        raise ModelSourceError(
            f"{folder / CONFIG} describes a {config.get('_class_name')!r}, not a {' or '.join(UNET_CLASSES)}; "
            "ddpm-deploy exports diffusers UNet2DModel and UNet2DConditionModel checkpoints"
        )
    if (folder / SAFETENSORS).is_file():
        weights = folder / SAFETENSORS
    elif (folder / PICKLE).is_file():
        if not allow_pickle:
            raise ModelSourceError(
                f"{folder} has only a pickle checkpoint ({PICKLE}); loading it runs code from the file. "
                "Convert it to safetensors, or pass --allow-pickle if you trust its origin"
            )
        weights = folder / PICKLE
    else:
        raise ModelSourceError(f"{folder} has no weights ({SAFETENSORS}); re-save the model with save_pretrained")
    index = root / MODEL_INDEX
    pipeline = _read_json(index, "pipeline index").get("_class_name") if folder != root and index.is_file() else None
    return ModelSource(source=source, root=root, folder=folder, weights=weights, config=config,
                       scheduler_config=_scheduler_config(root, folder), pipeline_class=pipeline)


def load_unet(model: ModelSource):
    """The UNet in eval mode, float32, on CPU."""
    import diffusers

    try:
        unet = getattr(diffusers, model.unet_class).from_pretrained(model.folder, use_safetensors=not model.uses_pickle)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise ModelSourceError(f"diffusers cannot load the UNet from {model.folder}: {first_line(exc)}") from None
    return unet.float().eval()


def weights_sha256(model: ModelSource) -> str:
    return sha256_file(model.weights)
