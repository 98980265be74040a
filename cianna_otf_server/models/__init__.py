"""Models: cards (what a model is and how to run it) and the registry that finds them.

A card is a small TOML file beside a weights file; see `ModelCard` for its fields and
`ModelRegistry` for where cards are looked for.
"""

from ._card import (
    NORMALISATIONS,
    PARAMETER_TRANSFORMS,
    PRECISIONS,
    ClassicSpec,
    ModelCard,
    NormalisationSpec,
    ParameterSpec,
    TilingSpec,
    YoloSpec,
    card_from_dict,
    load_card,
)
DEFAULT_MODEL = "yolo-demo"
"""The model used when none is named: the built-in network trained on simulated skies, which
finds more faint sources than ``classic`` at the same reliability (README: quality benchmark)."""

from ._registry import (
    BUILTIN_DIR,
    ENV_VAR,
    ModelEntry,
    ModelRegistry,
    check_consistency,
    default_registry,
    file_sha256,
    user_models_dir,
)

__all__ = [
    "BUILTIN_DIR",
    "DEFAULT_MODEL",
    "ENV_VAR",
    "NORMALISATIONS",
    "PARAMETER_TRANSFORMS",
    "PRECISIONS",
    "ClassicSpec",
    "ModelCard",
    "ModelEntry",
    "ModelRegistry",
    "NormalisationSpec",
    "ParameterSpec",
    "TilingSpec",
    "YoloSpec",
    "card_from_dict",
    "check_consistency",
    "default_registry",
    "file_sha256",
    "load_card",
    "user_models_dir",
]
