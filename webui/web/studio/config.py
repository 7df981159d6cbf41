"""What the studio page offers: presets, resolutions, control defaults and example prompts.

They come from ``assets/presets.yaml`` and ``assets/examples.yaml``, validated here.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, model_validator

ASSETS = Path(__file__).resolve().parents[3] / "assets"
PRESETS_PATH = ASSETS / "presets.yaml"
EXAMPLES_PATH = ASSETS / "examples.yaml"
CSS_PATH = ASSETS / "style.css"

CUSTOM = "Custom"
"""The resolution menu's entry for a size no preset has."""


class ControlDefaults(BaseModel):
    """What the controls show when the page opens."""

    resolution: str
    steps: int = Field(ge=1)
    guidance: float = Field(ge=0)
    lora_scale: float = Field(ge=0, le=2)
    num_images: int = Field(ge=1)
    strength: float = Field(gt=0, le=1)


class StudioPreset(BaseModel):
    """A one-click studio set-up: a prompt template and the parameters that go with it."""

    name: str
    description: str = ""
    subject: str = Field(description="Used for {subject} when the user gives none.")
    prompt: str = Field(description="Template; {subject} is replaced by the subject.")
    negative_prompt: str = ""
    resolution: str | None = None
    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0)
    num_images: int | None = Field(None, ge=1)
    lora_scale: float | None = Field(None, ge=0, le=2)

    def render_prompt(self, subject: str) -> str:
        """The prompt for ``subject`` (the preset's own subject when blank)."""
        return self.prompt.replace("{subject}", subject.strip() or self.subject)


class StudioConfig(BaseModel):
    """The contents of ``assets/presets.yaml``."""

    defaults: ControlDefaults
    resolutions: dict[str, tuple[int, int]]
    presets: list[StudioPreset]

    @model_validator(mode="after")
    def _check_resolution_names(self) -> StudioConfig:
        names = [self.defaults.resolution] + [p.resolution for p in self.presets if p.resolution]
        unknown = sorted(set(names) - set(self.resolutions))
        if unknown:
            raise ValueError(f"unknown resolution name(s) {unknown}; known: {sorted(self.resolutions)}")
        return self

    def preset(self, name: str) -> StudioPreset | None:
        """The preset called ``name``, if any."""
        return next((p for p in self.presets if p.name == name), None)

    def resolution_name(self, width: int, height: int) -> str:
        """The resolution preset of this exact size, or ``Custom``."""
        return next((n for n, size in self.resolutions.items() if tuple(size) == (width, height)), CUSTOM)


class ExamplePrompt(BaseModel):
    """One entry of ``assets/examples.yaml``."""

    prompt: str
    negative_prompt: str = ""


def load_studio_config(path: Path = PRESETS_PATH) -> StudioConfig:
    """Read and validate the studio presets file."""
    return StudioConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def load_examples(path: Path = EXAMPLES_PATH) -> list[ExamplePrompt]:
    """Read the example prompts file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [ExamplePrompt.model_validate(item) for item in data["examples"]]
