"""Torch-free runtime: numpy, pillow and onnxruntime only. What apps import.

    from vs2_export.runtime import Vs2Session
    session = Vs2Session("exported/demo")
    session.classify(["photo.jpg"])

Nothing here imports torch, open_clip, onnx or the torch side of vs2_export.
"""

from . import contract
from .contract import METADATA_KEY, SCHEMA_VERSION
from .manifest import (
    ClassEmbeddingsInfo,
    InputsInfo,
    Manifest,
    ManifestError,
    ModelInfo,
    SaeInfo,
    SteeringInfo,
    TextInfo,
)
from .monitor import GateMonitor, GateSummary
from .preprocess import (
    IMAGE_EXTENSIONS,
    OPENAI_MEAN,
    OPENAI_STD,
    ImageError,
    PreprocessedBatch,
    PreprocessSpec,
    list_images,
    load_image,
    normalise,
    preprocess_image,
    preprocess_paths,
    resize_crop,
)
from .session import (
    InputError,
    ModelError,
    PathsResult,
    ProviderError,
    Vs2Session,
    rgb_paths,
    rgb_pixels,
    steering_feeds,
)

__all__ = [
    "contract",
    "IMAGE_EXTENSIONS", "METADATA_KEY", "OPENAI_MEAN", "OPENAI_STD", "SCHEMA_VERSION",
    "ClassEmbeddingsInfo", "GateMonitor", "GateSummary", "ImageError", "InputError", "InputsInfo",
    "Manifest", "ManifestError",
    "ModelError", "ModelInfo", "PathsResult", "PreprocessSpec", "PreprocessedBatch", "ProviderError",
    "SaeInfo", "SteeringInfo", "TextInfo", "Vs2Session", "list_images", "load_image", "normalise",
    "preprocess_image", "preprocess_paths", "resize_crop", "rgb_paths", "rgb_pixels", "steering_feeds",
]
