"""The demo's claims, on shortened seeded runs: LeNet reaches 95% on held-out real digits, the
forecaster beats the naive forecast on held-out real data, and the pictures are written; the course demos
(MNIST, sentiment, fine-tuning) reach their shortened runs' bars (the full runs' figures: README)."""

import matplotlib.image

from fusegraph import data, demo


def test_digits_demo_reaches_95_percent_held_out(tmp_path):
    result = demo.digits(tmp_path, epochs=6, verbose=False, say=lambda *a: None)
    assert result["accuracy"] >= 0.95
    assert result["gradient_error"] <= 1e-4
    for path in result["files"]:
        assert matplotlib.image.imread(path).shape[0] > 50  # a real picture, not an empty file
    assert {path.name for path in result["files"]} >= {"digits_curves.png", "digits_confusion.png"}


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


def test_mnist_demo_shortened_reaches_95_percent_held_out(tmp_path):
    """The demo's recipe with 2 epochs of its 4 (the rate's cosine spread over those 2): 95.5% seeded on
    the 1,000 held-out images (the full run's figure is the README's); the issue's bar is 95%."""
    result = demo.mnist(tmp_path, epochs=2, verbose=False, say=lambda *a: None)
    assert result["accuracy"] >= 0.95 and result["gradient_error"] <= 1e-4
    assert result["history"]["lr"] == [5e-3, 2.5e-3]  # half a cosine over the 2 epochs
    assert all(matplotlib.image.imread(path).shape[0] > 50 for path in result["files"])


def test_sentiment_demo_shortened_beats_the_majority_class_by_10_points(tmp_path):
    result = demo.sentiment(tmp_path, train_tweets=1000, first_task_tweets=4000, epochs=3, first_epochs=3,
                            verbose=False, say=lambda *a: None)
    assert result["accuracy"] >= result["majority"] + 0.10
    assert 0.5 < result["majority"] < 0.8 and result["bag_of_words"] > result["majority"]


def test_finetune_demo_shortened_trains_a_new_head_on_frozen_features(tmp_path):
    result = demo.finetune(tmp_path, epochs=3, target_images=100, verbose=False, say=lambda *a: None)
    assert result["accuracy"] >= 0.6 and result["scratch_accuracy"] >= 0.6  # 5 classes: chance is 0.2
    assert result["trainable"] < result["scratch_trainable"]
    assert all(path.exists() for path in result["files"])


def test_text_tools_pad_truncate_and_refuse_what_is_not_text():
    import pytest
    import torch

    import fusegraph as fg

    words = data.Vocabulary.build(["the cat sat", "the dog", "#tag @you don't"], max_size=6)
    assert words.words == ["<pad>", "<unk>", "the", "cat", "sat", "dog"]  # by count, ties by first appearance
    ids = words.encode(["the cat sat on the mat", "", "dog"], length=4)
    assert ids.tolist() == [[4, 1, 2, 1], [0, 0, 0, 0], [0, 0, 0, 5]]  # the last 4 words; unknown ones 1
    assert words.encode(["the cat sat"], 2, truncating="post").tolist() == [[2, 3]]
    assert words.encode(["the"], 3, padding="post").tolist() == [[2, 0, 0]]
    assert data.tokenize("Don't STOP #now @me!") == ["don't", "stop", "#now", "@me"]
    for bad, message in ((["ok", 3], "text 1 is a int"), ([], "no texts"), ("just a string", "list of texts"),
                         (["", "!!"], "no words")):
        with pytest.raises(fg.InputError, match=message):
            data.Vocabulary.build(bad)
    texts, labels = data.tweets()
    assert len(texts) == 38158 and set(labels) == set(data.SENTIMENTS) and all(isinstance(t, str) for t in texts)
    assert torch.is_tensor(words.encode(texts[:3], 8))
