"""`--imgsz` that is not a multiple of the model's stride is rounded up, with a warning naming the size used."""

from __future__ import annotations

import logging

import pytest

from pipeline.detect.detector import Detector
from tests.helpers.stream_helpers import tiny_model


def test_imgsz_off_the_stride_is_rounded_up_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.detect.detector"):
        detector = Detector(model=str(tiny_model()), imgsz=33, device="cpu")
    assert detector.imgsz == 64 and detector.fingerprint()["imgsz"] == 64
    assert "imgsz 33 is not a multiple of the model's stride 32: running at imgsz 64" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.detect.detector"):
        assert Detector(model=str(tiny_model()), imgsz=96, device="cpu").imgsz == 96
    assert "imgsz" not in caplog.text
