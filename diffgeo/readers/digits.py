"""The digit reader: an RBF SVM trained on scikit-learn's real 8x8 UCI digits reads 16x16 samples
of the ``digits`` model, mapped back to its 8x8, 0..16 input space by :func:`to_classifier_input`.

>>> clf = digit_classifier()
>>> clf.classes["digit"][:3], clf.image_shape
(('0', '1', '2'), (1, 16, 16))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import diffgeo.data.digits as digits_data
from diffgeo.readers.base import check_images

__all__ = ["DigitClassifier", "digit_classifier", "to_classifier_input", "CLASSIFIER_SEED",
           "CLASSIFIER_TEST_FRACTION"]

CLASSIFIER_SEED = 0
CLASSIFIER_TEST_FRACTION = 0.25
_DIGIT_SHAPE = (1, digits_data.RESOLUTION, digits_data.RESOLUTION)


@lru_cache(maxsize=1)
def _pool_of_upsampling() -> torch.Tensor:
    """M (64, 64) float64: row i is the 2x2-average-pooled 16x16 bilinear upsampling of the i-th 8x8
    basis image, the same ``F.interpolate`` call as :func:`diffgeo.data.digits.load_digits_images`."""
    basis = torch.eye(64, dtype=torch.float64).view(64, 1, 8, 8)
    up = F.interpolate(basis, size=_DIGIT_SHAPE[1:], mode="bilinear", align_corners=False)
    return F.avg_pool2d(up, 2).reshape(64, 64)


def to_classifier_input(images: torch.Tensor) -> np.ndarray:
    """Map 16x16 digit images (N, 1, 16, 16) in [-1, 1] to the classifier's input (N, 64) in [0, 16].

    The exact inverse of the data module's preprocessing (``x / 8 - 1``, bilinear 8 -> 16 with
    ``align_corners=False``): 2x2 average pooling, then undoing the blur that pooling leaves
    (pooling the bilinear upsampling is not the identity: per axis it mixes each pixel with its
    neighbours by 1/8, 3/4, 1/8, which is invertible; the 64x64 system is solved exactly), then
    ``8 (x + 1)`` and clipping to sklearn's 0..16. Real upsampled digits map back to the originals
    to float precision; generated samples map to the 8x8 image whose pooled upsampling equals
    their pooling.

    >>> from diffgeo.data.digits import load_digits_images
    >>> x = to_classifier_input(load_digits_images().images[:3])
    >>> x.shape, float(x.min()), float(x.max())
    ((3, 64), 0.0, 16.0)
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != _DIGIT_SHAPE:
        raise ValueError(f"images must be a tensor (N, 1, 16, 16) in [-1, 1] (digits model samples), got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    pooled = F.avg_pool2d(images.detach().cpu().double(), 2).reshape(images.shape[0], 64)
    # pooled = x8 @ M  =>  x8 = pooled @ M^-1, i.e. solve M^T x8^T = pooled^T
    x8 = torch.linalg.solve(_pool_of_upsampling().T, pooled.T).T
    return (8.0 * (x8 + 1.0)).clamp(0.0, 16.0).numpy()


@dataclass(frozen=True)
class DigitClassifier:
    """An RBF support-vector classifier of the real 8x8 digits (inputs (N, 64) in 0..16), as a
    :class:`~diffgeo.readers.Reader` of 16x16 digit images.

    accuracy: on the held-out ``CLASSIFIER_TEST_FRACTION`` of the 1,797 digits (a stratified
    split seeded by ``CLASSIFIER_SEED``); n_train, n_test: split sizes.
    """

    estimator: Any
    accuracy: float
    n_train: int
    n_test: int
    name: str = "digits"
    classes: dict = field(default_factory=lambda: {"digit": tuple(str(d) for d in range(10))})
    image_shape: tuple[int, ...] = _DIGIT_SHAPE

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted digits (N,) int64 of 16x16 images (N, 1, 16, 16) in [-1, 1]."""
        return torch.as_tensor(self.estimator.predict(to_classifier_input(images)), dtype=torch.long)

    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"digit": (N,) int64} (no validity: every image is read as some digit)."""
        return {"digit": self.predict(check_images(self, images))}


@lru_cache(maxsize=1)
def digit_classifier() -> DigitClassifier:
    """The digit reader (cached; trains in well under a second).

    ``SVC(C=10, gamma=0.001)`` on 75% of sklearn's ``load_digits`` (the standard RBF setting for
    these 0..16 features), scored on the stratified 25% it never saw.

    >>> clf = digit_classifier()
    >>> clf.accuracy > 0.95, clf.n_train + clf.n_test
    (True, 1797)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    data = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(data.data, data.target, test_size=CLASSIFIER_TEST_FRACTION,
                                              stratify=data.target, random_state=CLASSIFIER_SEED)
    estimator = SVC(C=10.0, gamma=0.001).fit(x_tr, y_tr)
    return DigitClassifier(estimator, float(estimator.score(x_te, y_te)), len(y_tr), len(y_te))
