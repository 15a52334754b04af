"""The "unknown" class of open-set detection: one extra class after the ID classes.

`ghostbox finetune --unknown-class` labels the proxies' pasted regions as this class instead
of leaving them as background, so the detector learns to say "something, not one of mine"
where it would hallucinate. At inference (`Detector`) boxes of this class are not ID
detections: they are dropped and counted, and the rest of ghostbox sees only the ID classes
(their names, and logits without the unknown column). The name marks such a model; it is not
a name a dataset would use.
"""

from __future__ import annotations

from collections.abc import Sequence

UNKNOWN_CLASS = "ghostbox:unknown"


def split_unknown(names: Sequence[str]) -> tuple[tuple[str, ...], int | None]:
    """(the ID class names, the unknown class's index or None) of a model's class names."""
    names = tuple(names)
    if names and names[-1] == UNKNOWN_CLASS:
        return names[:-1], len(names) - 1
    return names, None
