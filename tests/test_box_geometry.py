"""`pixel_box` / `cut`: a float box rounded outward to whole pixels, clipped to the image, never empty."""

from __future__ import annotations

import numpy as np

from pipeline.box_geometry import cut, pixel_box


def test_pixel_box_rounds_outward() -> None:
    assert pixel_box([1.2, 2.7, 5.1, 6.0], 10, 10) == (1, 2, 6, 6)


def test_pixel_box_is_clipped_to_the_image() -> None:
    assert pixel_box(np.array([-5.0, -1.0, 30.0, 12.5], np.float32), 20, 10) == (0, 0, 20, 10)


def test_pixel_box_is_never_empty() -> None:
    assert pixel_box([4.0, 4.0, 4.0, 4.0], 10, 10) == (4, 4, 5, 5)  # zero area: one pixel
    assert pixel_box([50.0, 50.0, 60.0, 60.0], 10, 8) == (9, 7, 10, 8)  # wholly outside: the nearest corner pixel


def test_cut_is_the_pixel_box_of_the_image() -> None:
    image = np.arange(8 * 10 * 3, dtype=np.uint8).reshape(8, 10, 3)
    crop = cut(image, [1.5, 2.0, 4.2, 7.9])
    assert crop.shape == (6, 4, 3)
    assert np.array_equal(crop, image[2:8, 1:5])
