"""Live sources: a webcam (device index) or an RTSP/HTTP stream through OpenCV/FFmpeg.

A camera may drop and come back, so the reader reconnects on its own with `Backoff` (doubling
delays, optional attempt limit) instead of ending the stream; the other streams go on meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2

from pipeline.sources.frame_reader import Captured

log = logging.getLogger(__name__)


class Backoff:
    """Reconnect delays: initial, doubling up to max; reset after a success; optional attempt limit."""

    def __init__(self, initial_s: float, max_s: float, attempts: int | None = None) -> None:
        self.initial_s, self.max_s, self.attempts = initial_s, max_s, attempts
        self.failures = 0

    def next_delay(self) -> float | None:
        """Seconds to wait before the next try, or None when the attempts are used up."""
        self.failures += 1
        if self.attempts is not None and self.failures > self.attempts:
            return None
        return min(self.initial_s * 2 ** (self.failures - 1), self.max_s)

    def reset(self) -> None:
        self.failures = 0


class CaptureReader:
    """A webcam (device index) or network stream through OpenCV/FFmpeg, reconnecting with back-off.

    `read()` only returns None when the attempts are used up or `stop` is set; while the
    camera is away it keeps retrying, and the other streams of the graph go on.
    """

    live = True
    report = None

    def __init__(self, uri: str, backoff: Backoff, stop: threading.Event,
                 open_capture: Callable[[str], Any] | None = None) -> None:
        self.uri = uri
        self.backoff = backoff
        self.stop = stop
        self.fps: float | None = None
        self.reconnects = 0
        self._open_capture = open_capture or _open_cv_capture
        self._capture: Any = None
        self._index = 0

    def _connect(self) -> bool:
        while not self.stop.is_set():
            capture = None
            try:
                capture = self._open_capture(self.uri)
                if capture is not None and capture.isOpened():
                    self._capture = capture
                    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0)
                    self.fps = fps if 0 < fps <= 240 else None
                    return True
            except Exception as exc:  # noqa: BLE001 - a backend error is one more failed attempt
                log.debug("opening %s: %s", self.uri, exc)
            if capture is not None:
                capture.release()
            if not self._wait("cannot open"):
                return False
        return False

    def _wait(self, what: str) -> bool:
        delay = self.backoff.next_delay()
        if delay is None:
            log.error("source %s: %s; giving up after %d attempts", self.uri, what, self.backoff.failures - 1)
            return False
        log.warning("source %s: %s; retrying in %.1f s", self.uri, what, delay)
        return not self.stop.wait(delay)

    def read(self) -> Captured | None:
        while not self.stop.is_set():
            if self._capture is None:
                if not self._connect():
                    return None
                if self.backoff.failures:
                    self.reconnects += 1
                    log.info("source %s: connected again", self.uri)
            ok, image = self._capture.read()
            if ok and image is not None:
                self.backoff.reset()
                self._index += 1
                return Captured(image, self.uri, self._index - 1, time.time())
            self._capture.release()
            self._capture = None
            if not self._wait("stream lost"):
                return None
        return None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _open_cv_capture(uri: str) -> Any:
    if uri.isdigit():
        capture = cv2.VideoCapture(int(uri))
    else:
        # bounded open/read timeouts, so an unreachable camera never blocks the thread for minutes
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        capture = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where the backend honours it: fewer stale frames
    return capture
