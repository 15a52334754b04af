"""Trim hallucinated tracks out of unlabelled calibration footage.

A camera's own frames have no labels, and what the detector reports on them is not all ID:
on the street world's stream a third of the detections are on OoD objects (a bench taken
for a car for hundreds of frames). Taking them all as ID puts the hallucinations into the
bottom 5% the thresholds are set from, and the filter then keeps them. Tracks do not help
by themselves (a parked bench persists as well as a car); the filter's scores do: a track
whose boxes sit, on average, below the *reference* thresholds (set on labelled ID boxes, or
on the footage itself when there are none) is left out as a whole, and the thresholds are
set on the rest.

Failure modes, said plainly: a camera whose real objects all score lower than the reference
(strong domain shift) loses its real tracks too and gets thresholds too tight (more real
objects flagged; the held-out check and the drift gauge show it); a hallucination that the
reference thresholds already keep stays in the calibration set and keeps the thresholds low.
"""

from __future__ import annotations

import numpy as np


def trim_tracks(scores: np.ndarray, track_ids: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mask of boxes whose track's mean (score - reference threshold) is >= 0."""
    margin = np.asarray(scores, np.float64) - np.asarray(reference, np.float64)
    tracks, inverse = np.unique(np.asarray(track_ids), return_inverse=True)
    mean = np.bincount(inverse, weights=margin, minlength=len(tracks)) / np.bincount(inverse, minlength=len(tracks))
    return mean[inverse] >= 0.0
