"""What a hallucination filter's policy does to a frame's boxes, in one place: `shown`.

The filter only scores and flags (`HallucinationFilter.apply` marks every box); its policy is a
setting stored in the filter file, and dropping is an option of the outputs that show boxes:
detections.jsonl, the annotated videos and images, the live view. Under "drop" they leave the
flagged boxes out; the crop archives keep them (they are the fine-tuning data) and the counts
count them. `ghostbox detect --policy drop` and the stream sinks both come here.
"""

from __future__ import annotations

import numpy as np

from pipeline.detections import Detections


def shown(dets: Detections, flagged: np.ndarray, policy: str | None) -> tuple[Detections, int]:
    """The boxes an output shows under `policy`, and how many it left out: every box under "flag" (or
    without a filter), only the unflagged ones under "drop". `flagged`: bool per box, the verdict acted
    on (a track's, on a tracked source)."""
    if policy != "drop":
        return dets, 0
    left_out = int(np.count_nonzero(flagged))
    return (dets[~np.asarray(flagged, bool)], left_out) if left_out else (dets, 0)
