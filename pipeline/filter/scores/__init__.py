"""Built-in box-level OOD scores; importing this package registers them all.

One module per method, except the three that read only the class logits (msp, maxlogit,
energy), which share `logit_scores`. Each module registers its class with
`pipeline.filter.registry.register`; the registry never imports this package (fusion looks
its members up there, so the registry must sit below the scores). The package
`pipeline.filter` imports this one, so the built-ins are registered before any lookup.

    msp          max softmax probability          (Hendrycks & Gimpel, ICLR 2017)
    maxlogit     max logit                        (Hendrycks et al., ICML 2022)
    energy       T logsumexp(z / T)               (Liu et al., NeurIPS 2020)
    mahalanobis  nearest class mean, shrunk shared covariance   (Lee et al., NeurIPS 2018)
    knn          k-th nearest ID feature          (Sun et al., ICML 2022)
    vim          energy minus virtual logit       (Wang et al., CVPR 2022)
    bam          box abstraction monitor          (Wu et al.; M-Hood)
    abet         ablated learned temperature energy   (LeVine et al., 2024)
    oe           ID-vs-outlier head on box features (outlier exposure; Hendrycks et al.,
                 ICLR 2019): needs outlier boxes, e.g. detections on proxy images
    crop         a small CNN on the box's crop: log-odds that it shows the detector's class;
                 needs outlier boxes with crops
    fusion       rank / z-score mean of several of the above, or a logistic combiner fitted
                 on held-out ID and outlier boxes

All scores: higher = more in-distribution.
"""

from pipeline.filter.scores.abet import AbeT
from pipeline.filter.scores.bam import BoxAbstraction
from pipeline.filter.scores.crop import CropModel
from pipeline.filter.scores.fusion import Fusion
from pipeline.filter.scores.knn import KNN
from pipeline.filter.scores.logit_scores import Energy, MaxLogit, MaxSoftmax
from pipeline.filter.scores.mahalanobis import Mahalanobis
from pipeline.filter.scores.oe import OutlierExposure
from pipeline.filter.scores.vim import ViM

__all__ = ["AbeT", "BoxAbstraction", "CropModel", "Energy", "Fusion", "KNN", "Mahalanobis", "MaxLogit", "MaxSoftmax",
           "OutlierExposure", "ViM"]
