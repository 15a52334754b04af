"""Draw detections on a frame: kept boxes solid, flagged hallucinations dashed in magenta."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.detections import Detections

# BGR, distinguishable on street scenes; hallucinations get their own colour below.
PALETTE = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
    (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
]
GHOST = (255, 0, 255)


def _dashed_rectangle(image: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], color, thickness: int) -> None:
    (x1, y1), (x2, y2) = p1, p2
    dash = max(4, 3 * thickness)
    for x in range(x1, x2, 2 * dash):
        cv2.line(image, (x, y1), (min(x + dash, x2), y1), color, thickness)
        cv2.line(image, (x, y2), (min(x + dash, x2), y2), color, thickness)
    for y in range(y1, y2, 2 * dash):
        cv2.line(image, (x1, y), (x1, min(y + dash, y2)), color, thickness)
        cv2.line(image, (x2, y), (x2, min(y + dash, y2)), color, thickness)


def _label(image: np.ndarray, text: str, x: int, y: int, color, scale: float) -> None:
    thickness = max(1, int(round(scale * 2)))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    top = y - h - base - 2 if y - h - base - 2 >= 0 else y
    cv2.rectangle(image, (x, top), (x + w + 2, top + h + base + 2), color, -1)
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)


def annotate(frame: np.ndarray, detections: Detections) -> np.ndarray:
    """A copy of `frame` with the boxes drawn; uses the track's verdict and score (`track_hallucination`,
    `track_score`) when present, else the frame's (`hallucination`, `score`)."""
    image = frame.copy()
    height, width = image.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    scale = max(0.35, min(height, width) / 900)
    tracked = "track_hallucination" in detections.data
    flags, scores = detections.verdict()
    labels = detections.labels
    for i in range(len(detections)):
        x1, y1, x2, y2 = (int(round(v)) for v in detections.xyxy[i])
        ghost = bool(flags[i]) if flags is not None else False
        if ghost:
            color = GHOST
            _dashed_rectangle(image, (x1, y1), (x2, y2), color, thickness)
            text = f"ghost? {labels[i]}"
            if scores is not None:  # a track's mean margin (score - threshold), or the box's own score
                text += f" track {float(scores[i]):+.2f}" if tracked else f" s={float(scores[i]):.2f}"
        else:
            color = PALETTE[int(detections.class_id[i]) % len(PALETTE)]
            cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
            text = f"{labels[i]} {float(detections.confidence[i]):.2f}"
        _label(image, text, max(0, x1), max(0, y1), color, scale)
    return image
