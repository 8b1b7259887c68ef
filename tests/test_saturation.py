"""The saturated-sample statistic on crafted images, and its value on real Fashion-MNIST-like data."""

from __future__ import annotations

import numpy as np
import pytest

from synthaug.metrics.saturation import background_level, saturated, saturated_share


def _canvas(n: int = 1, channels: int = 1) -> np.ndarray:
    return np.zeros((n, 16, 16, channels), dtype=np.uint8)


def test_a_flat_white_silhouette_is_saturated_a_textured_object_is_not():
    blob, textured, empty = _canvas(), _canvas(), _canvas()
    blob[0, 4:12, 4:12] = 255
    rng = np.random.default_rng(0)
    textured[0, 4:12, 4:12] = rng.integers(40, 230, size=(8, 8, 1))
    assert saturated(np.concatenate([blob, textured, empty])).tolist() == [True, False, False]


def test_half_the_object_near_white_is_the_boundary():
    img = _canvas(2)
    img[:, 0:4, :] = 128          # 64 foreground pixels, mid grey
    img[0, 4:8, :] = 240          # + 64 near-white: exactly half -> saturated
    img[1, 4:8, :15] = 240        # + 60 near-white: just under half -> not
    img[1, 4:8, 15] = 200
    assert saturated(img).tolist() == [True, False]


def test_grey_background_counts_as_foreground_so_a_blob_on_it_is_judged_against_it():
    img = _canvas()
    img[:] = 100                  # grey background: 256 foreground pixels
    img[0, 2:14, 2:14] = 255      # 144 near-white: more than half
    assert saturated(img).tolist() == [True]
    img[0, :, :] = 100
    img[0, 4:12, 4:12] = 255      # 64 of 256: a bright patch on grey, not a silhouette
    assert saturated(img).tolist() == [False]


def test_colour_images_use_the_brightest_channel_and_the_share_averages():
    img = _canvas(4, channels=3)
    img[0, 4:12, 4:12, 0] = 250   # a saturated red blob
    img[1, 4:12, 4:12, :] = 120
    assert saturated_share(img) == pytest.approx(0.25)
    assert saturated_share(img[:0]) == 0.0


def test_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        saturated(np.zeros((1, 4, 4, 1), dtype=np.float32))


def test_background_level_reads_the_four_corners_only():
    img = _canvas(2)
    img[:, 4:12, 4:12] = 255                    # the object, away from the corners
    assert background_level(img) == 0.0
    img[1] = 40                                  # the second image on a uniform grey background
    img[1, 4:12, 4:12] = 255
    assert background_level(img) == pytest.approx(20.0)  # mean over both images' 4 x 9 corner pixels
    img[0, 0, 0] = 255                           # one corner pixel of 72 in all
    assert background_level(img) == pytest.approx(20.0 + 255 / 72)
