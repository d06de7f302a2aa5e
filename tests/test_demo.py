"""The demo's claims, on shortened seeded runs: LeNet reaches 95% on held-out real digits, the
forecaster beats the naive forecast on held-out real data, and the pictures are written."""

import matplotlib.image

from fusegraph import data, demo


def test_digits_demo_reaches_95_percent_held_out(tmp_path):
    result = demo.digits(tmp_path, epochs=6, verbose=False, say=lambda *a: None)
    assert result["accuracy"] >= 0.95
    assert result["gradient_error"] <= 1e-4
    for path in result["files"]:
        assert matplotlib.image.imread(path).shape[0] > 50  # a real picture, not an empty file


def test_forecaster_beats_the_naive_forecast_on_held_out_data(tmp_path):
    result = demo.timeseries(tmp_path, series="sunspots", epochs=15, verbose=False, say=lambda *a: None)
    assert result["rmse"] < result["naive_rmse"]
    assert all(path.exists() for path in result["files"])


def test_datasets_ship_with_packages_and_augmentation_is_seeded():
    import torch

    x_train, y_train, x_test, y_test = data.digits()
    assert x_train.shape[1:] == (1, 8, 8) and len(x_train) + len(x_test) == 1797
    assert float(x_train.max()) <= 1.0 and set(y_train.unique().tolist()) == set(range(10))
    assert len(data.series("co2")) == 2284 and len(data.series("sunspots")) == 309
    augment = data.shift_augment(1)
    first = augment(x_train[:8], torch.Generator().manual_seed(3))
    again = augment(x_train[:8], torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and first.shape == x_train[:8].shape
    assert not torch.equal(first, x_train[:8])
