"""What a synthetic world is made of: seed, image size, split sizes and objects per image."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline.errors import GhostboxError

MIN_SIDE_PX = 64  # smaller images cannot hold a street with objects on it
MAX_SIDE_PX = 4096


class WorldConfig(BaseModel):
    """All settings of one world; the same config and seed give the same files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    width: int = 320
    height: int = 320
    train: int = 1500
    val: int = 300
    near_test: int = 300
    far_test: int = 300
    pool: int = 300
    mixed_test: int = 200
    contaminated: int = 200
    contamination_fraction: float = 0.1
    stream_frames: int = 300
    stream_fps: float = 30.0
    # objects per image, inclusive ranges; placement drops what cannot be seen well enough
    id_objects_per_image: tuple[int, int] = (1, 7)
    empty_id_fraction: float = 0.05
    ood_objects_per_image: tuple[int, int] = (2, 5)
    mixed_id_objects_per_image: tuple[int, int] = (1, 4)
    mixed_ood_objects_per_image: tuple[int, int] = (1, 3)
    stream_objects_on_screen: int = 5

    @model_validator(mode="wrap")
    @classmethod
    def _one_error_type(cls, data: Any, handler: Any) -> WorldConfig:
        # type and unknown-field errors become the project's one user-facing error
        try:
            return handler(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "config"
            raise GhostboxError(f"world config: {field}={err.get('input')!r}: {err['msg']}") from None

    @model_validator(mode="after")
    def _check_values(self) -> WorldConfig:
        if self.seed < 0:
            raise GhostboxError(f"world config: seed={self.seed} must be >= 0")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not MIN_SIDE_PX <= value <= MAX_SIDE_PX:
                raise GhostboxError(
                    f"world config: {name}={value} must be between {MIN_SIDE_PX} and {MAX_SIDE_PX} px")
        for name in ("train", "val", "near_test", "far_test", "pool", "mixed_test", "contaminated",
                     "stream_frames"):
            value = getattr(self, name)
            if value < 0:
                raise GhostboxError(f"world config: {name}={value} must be >= 0")
        for name in ("contamination_fraction", "empty_id_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise GhostboxError(f"world config: {name}={value} must be between 0 and 1")
        if not self.stream_fps > 0:
            raise GhostboxError(f"world config: stream_fps={self.stream_fps} must be > 0")
        if self.stream_objects_on_screen < 0:
            raise GhostboxError(
                f"world config: stream_objects_on_screen={self.stream_objects_on_screen} must be >= 0")
        for name, least in (("id_objects_per_image", 0), ("ood_objects_per_image", 1),
                            ("mixed_id_objects_per_image", 1), ("mixed_ood_objects_per_image", 1)):
            lo, hi = getattr(self, name)
            if not least <= lo <= hi:
                raise GhostboxError(
                    f"world config: {name}=({lo}, {hi}) needs {least} <= low <= high")
        return self
