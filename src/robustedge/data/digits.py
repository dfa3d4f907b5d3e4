"""scikit-learn's 1,797 real 8x8 grey digits: the embedded default data set."""

from __future__ import annotations

import numpy as np

from robustedge.data.base import DATASETS, Dataset, stratified_split

SPLIT_SEED = 20211  # fixed: every run and every test sees the same split
TEST_FRACTION = 0.25


@DATASETS.register("digits")
def load_digits_dataset(data_dir: object = None) -> Dataset:
    """Load digits as 1 x 8 x 8 images in [0, 1] (raw values 0..16 / 16), 75/25 stratified."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    tr, te = stratified_split(y, TEST_FRACTION, SPLIT_SEED)
    return Dataset(
        name="digits",
        x_train=x[tr],
        y_train=y[tr],
        x_test=x[te],
        y_test=y[te],
        num_classes=10,
        class_names=[str(i) for i in range(10)],
    )
