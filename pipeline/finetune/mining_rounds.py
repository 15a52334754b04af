"""Rounds of mining: fine-tune, mine what the new model still hallucinates, fine-tune again.

Round 1 is the plain fine-tune. Before each later round, the previous round's model runs on
a seeded sample of the mining pool (images without ID objects: only pool kinds, never the
test kinds); its boxes there are hallucinations by construction, and they are pasted into
ID training images as a `mined` proxy set (`ghostbox proxies --strategies mined`). The next
round continues from that model with every proxy set so far, so it is trained on exactly
what it still gets wrong.

    OUT/round-K/mined/      the proxy set mined with round K-1's model
    OUT/round-K/            the round's training set, Ultralytics run, model.pt, filter and eval
    OUT/round-K/round.json  written when the round is done; a resumed run skips such rounds
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.detect.config import DetectorConfig
from pipeline.errors import GhostboxError
from pipeline.json_files import write_json
from pipeline.proxies.proxy_set import ProxySetBuilder, ProxySettings

log = logging.getLogger(__name__)

ROUND_FILE = "round.json"
# the job's fields that change how a run trains besides its training settings (a reused seed must match)
METHOD_FIELDS = {"rounds", "mine_pool", "mine_count", "mine_images", "mine_conf", "unknown_class"}
# each round's mining draws its own pool sample and hosts, apart from the training seed's other draws
_ROUND_SEED_STRIDE = 1000


def round_dir(out: Path, index: int, rounds: int) -> Path:
    """Where round `index` (1-based) writes: OUT itself when there is one round."""
    return out if rounds == 1 else out / f"round-{index}"


def finished_round(folder: Path) -> dict[str, Any] | None:
    """A done round's record (round.json), or None."""
    try:
        record = json.loads((folder / ROUND_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and Path(str(record.get("model", ""))).is_file() else None


def mining_seed(training_seed: int, index: int) -> int:
    return training_seed * _ROUND_SEED_STRIDE + index


def mine_round(model: str | Path, *, id_spec: str, pool: str, out: Path, count: int, mine_images: int, seed: int,
               conf: float, device: str, batch: int) -> Path | None:
    """The `mined` proxy set of `model` on `pool` in `out` (made again if a cut-short one is there); None when
    the model reports no box at `conf` on the pool sample: nothing is left to mine."""
    from pipeline.detect.detector import Detector  # torch: only when a round mines

    if (out / "manifest.json").is_file():
        log.info("mined proxies in %s were made before; reused", out)
        return out
    detector = Detector(DetectorConfig(model=str(model), device=device, batch=batch, conf=conf))
    settings = ProxySettings(id_spec=id_spec, out=out, strategies=("mined",), count=count, seed=seed, pool=pool,
                             conf=conf, mine_images=mine_images, overwrite=True)
    builder = ProxySetBuilder(settings, detector)
    try:
        builder.mine()
    except GhostboxError:
        if builder.mining is not None and not len(builder.mining.crops):
            log.info("%s reports no box at conf %.2f on %d pool images: nothing left to mine", Path(model).name,
                     conf, builder.mining.images_run)
            return None
        raise
    result = builder.write()
    part = result.manifest.strategies["mined"]
    if not part["written"]:
        raise GhostboxError(f"mining with {model}: no proxy image was written to {out} ({'; '.join(result.notes)})")
    params = part["parameters"]
    log.info("mined %d proxy images with %s: %d boxes kept of %d on %d pool images", part["written"], Path(model).name,
             params["kept"], params["detections"], params["images_run"])
    return out


def write_round(folder: Path, record: dict[str, Any]) -> None:
    write_json(folder / ROUND_FILE, record)
