"""OoD proxy synthesis: training images that teach a detector what is *not* an ID object.

``build_proxy_set(ProxySettings(...), detector)`` (or ``ProxySetBuilder``, step by step)
writes one proxy set in Ultralytics layout with a manifest of how each image was made
(``proxy_set``, ``manifest``). The pieces:
``placement`` (sizes and spots clear of ID boxes), ``blend`` (feathered pasting),
``outlier_sources`` (pool, unlabelled folders, flagged archives), ``id_transforms`` (ID crops
made non-ID) and ``mining`` (the detector's own hallucinations on the pool).
"""

from pipeline.proxies.manifest import read_manifest
from pipeline.proxies.placement import PlacementRules
from pipeline.proxies.proxy_set import (
                                        STRATEGIES,
                                        ProxySetBuilder,
                                        ProxySetResult,
                                        ProxySettings,
                                        build_proxy_set,
                                        parse_strategies,
)

__all__ = ["STRATEGIES", "PlacementRules", "ProxySetBuilder", "ProxySetResult", "ProxySettings", "build_proxy_set",
           "parse_strategies", "read_manifest"]
