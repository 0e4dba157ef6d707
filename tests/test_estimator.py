"""mnist_mlp.MLPClassifier: scikit-learn's own estimator checks, its tools, and the bridge to
the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="the sklearn extra is not installed")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import mnist_mlp  # noqa: E402
from mnist_mlp import checkpoint, evaluation  # noqa: E402
from mnist_mlp.errors import MlpError  # noqa: E402
from mnist_mlp.estimator import MLPClassifier, ParameterError  # noqa: E402


def small(**params):
    """A net small and quick enough for the sklearn-sized datasets below."""
    return MLPClassifier(
        **{
            "hidden_layer_sizes": (32,),
            "max_iter": 30,
            "batch_size": 16,
            "random_state": 0,
            **params,
        }
    )


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)  # 8x8 digits, 64 features in 0..16, 10 classes
    return X, y


def test_scikit_learns_estimator_checks_all_pass():
    # In a process of its own: the array-API check needs SCIPY_ARRAY_API set before SciPy is
    # imported, and then it runs instead of skipping.
    code = textwrap.dedent("""
        import collections, json
        from sklearn.utils.estimator_checks import check_estimator
        from mnist_mlp import MLPClassifier
        results = check_estimator(MLPClassifier(), on_fail=None)
        print(json.dumps([[r["check_name"], r["status"], str(r["exception"] or "")[:300]]
                          for r in results]))
    """)
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout.strip().splitlines()[-1])
    failed = [r for r in results if r[1] != "passed"]
    assert not failed, failed
    assert len(results) >= 50  # 55 with scikit-learn 1.9


@pytest.mark.parametrize(
    "params, message",
    [
        ({"learning_rate_init": -1}, "learning_rate_init must be > 0, got -1"),
        ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes must be a list of sizes > 0"),
        ({"hidden_layer_sizes": "wide"}, "hidden_layer_sizes must be a tuple of sizes"),
        (
            {"activation": "softplus"},
            "activation must be one of relu, sigmoid, tanh, logistic, got 'softplus'",
        ),
        ({"momentum": 1.5}, "momentum must be in [0, 1), got 1.5"),
        ({"alpha": -0.1}, "alpha must be >= 0, got -0.1"),
        ({"max_iter": 0}, "max_iter must be > 0, got 0"),
        ({"schedule": "linear"}, "schedule must be one of constant, step, cosine, got 'linear'"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"tol": -1}, "tol must be >= 0, got -1"),
        ({"validation_fraction": 1.0}, "validation_fraction must be in (0, 1), got 1.0"),
        ({"n_iter_no_change": 0}, "n_iter_no_change must be an integer >= 1, got 0"),
        ({"random_state": -3}, "random_state must be an integer >= 0, a RandomState or None"),
        (
            {"augment": {"rotat": 10}},
            "unknown key 'augment.rotat' (did you mean 'augment.rotate'?)",
        ),
        ({"augment": {"rotate": 10}}, "augment distorts 28x28 digits given as uint8 pixels"),
    ],
)
def test_a_bad_parameter_is_one_line_naming_it(params, message, digits):
    with pytest.raises(ParameterError) as info:
        small(**params).fit(*digits)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)  # as scikit-learn's own errors are


def test_learns_digits_with_labels_of_any_kind(digits):
    X, y = digits
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    clf = small().fit(X[:1500], names[y[:1500]])
    assert list(clf.classes_) == sorted(names)
    assert clf.score(X[1500:], names[y[1500:]]) > 0.9
    proba = clf.predict_proba(X[1500:])
    assert proba.shape == (len(X) - 1500, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X[1500:])), proba, rtol=1e-5)
    assert (
        clf.n_features_in_ == 64 and 10 < clf.n_iter_ <= 30 and len(clf.loss_curve_) == clf.n_iter_
    )
    assert clf.loss_curve_[-1] < clf.loss_curve_[0] and clf.best_loss_ == min(clf.loss_curve_)
    assert [w.shape for w in clf.coefs_] == [(64, 32), (32, 10)]
    assert [b.shape for b in clf.intercepts_] == [(32,), (10,)]
    assert clf.validation_scores_ is None and clf.t_ == clf.n_iter_ * 1500


def test_feature_names_from_a_dataframe(digits):
    pd = pytest.importorskip("pandas")
    X, y = digits
    frame = pd.DataFrame(X, columns=[f"pixel{i}" for i in range(64)])
    clf = small(max_iter=2).fit(frame, y)
    assert list(clf.feature_names_in_) == list(frame.columns)
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X[:3])


def test_early_stopping_keeps_the_best_epoch_and_stops(digits):
    X, y = digits
    clf = small(early_stopping=True, n_iter_no_change=3, max_iter=200, tol=0.0).fit(X, y)
    assert clf.n_iter_ < 200  # it stopped
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    # the kept weights are the best epoch's: their validation accuracy is the best score
    best_epoch = int(np.argmax(clf.validation_scores_))
    assert best_epoch < clf.n_iter_ - 1 or clf.n_iter_ == 200


def test_training_loss_stalling_stops_without_early_stopping(digits):
    X, y = digits
    clf = small(tol=10.0, n_iter_no_change=2, max_iter=50).fit(X, y)  # nothing improves by 10
    assert clf.n_iter_ == 3


def test_partial_fit_and_warm_start_continue(digits):
    X, y = digits
    with pytest.raises(ParameterError, match="classes must be given"):
        small().partial_fit(X, y)
    clf = small()
    for _ in range(3):
        clf.partial_fit(X[:900], y[:900], classes=np.arange(10))
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
    assert clf.loss_curve_[2] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match="X has 63 features"):
        clf.partial_fit(X[:10, :63], y[:10])
    warm = small(max_iter=5, warm_start=True).fit(X, y)
    before = [w.copy() for w in warm.coefs_]
    warm.fit(X, y)
    assert warm.n_iter_ == 10 and not np.array_equal(warm.coefs_[0], before[0])
    cold = small(max_iter=5).fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == 5


def test_the_same_seed_gives_the_same_net(digits):
    X, y = digits
    a, b = small(max_iter=3).fit(X, y), small(max_iter=3).fit(X, y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    c = small(max_iter=3, random_state=1).fit(X, y)
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


def test_pipeline_clone_cross_validation_and_pickle(digits, tmp_path):
    import joblib

    X, y = digits
    pipe = make_pipeline(StandardScaler(), small(max_iter=10))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.9
    fitted = clone(pipe).fit(X, y)
    joblib.dump(fitted, tmp_path / "pipe.joblib")
    loaded = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    assert clone(small()).get_params() == small().get_params()


def test_grid_search_in_two_processes_limits_each_ones_blas_threads(digits):
    X, y = digits
    grid = GridSearchCV(small(max_iter=5), {"learning_rate_init": [0.01, 0.05]}, cv=2, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_score_ > 0.8
    # the workers' fits: joblib's processes each run BLAS on its share of the cores
    out = cross_validate(small(max_iter=2), X, y, cv=2, n_jobs=2, return_estimator=True)
    threads = [e.fit_info_["blas_threads"] for e in out["estimator"]]
    cores = os.cpu_count() or 1
    assert all(t is not None and t <= max(1, cores // 2) for t in threads), threads


def test_a_checkpoint_round_trip_keeps_labels_and_scaling(digits, tmp_path):
    X, y = digits
    labels = np.array(["even", "odd"])[y % 2]
    clf = small(max_iter=5).fit(X, labels)
    path = tmp_path / "net.npz"
    clf.save_checkpoint(path)
    np.load(path, allow_pickle=False)  # arrays and JSON only
    back = MLPClassifier.from_checkpoint(path)
    assert list(back.classes_) == ["even", "odd"]
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.n_features_in_ == 64 and back.input_scaling_ == clf.input_scaling_
    ckpt = checkpoint.load(path)
    assert ckpt.sizes == [64, 32, 2]
    assert ckpt.meta["input"]["shape"] == [64]
    # the commands that feed it images say, in one line, that it takes other inputs
    from click.testing import CliRunner

    from mnist_mlp.cli import main

    for args in (["eval", str(path)], ["predict", str(path), "--checkpoint", str(path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1
        assert "takes 64 features, not the 784 pixels of a 28x28 image" in result.output


def test_summary_counts_the_parameters():
    text = MLPClassifier().summary()
    assert "784-1024-10" in text and "814,090" in text and "not fitted" in text


def test_without_scikit_learn_the_import_says_what_to_install(tmp_path):
    blocker = tmp_path / "sklearn"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('no scikit-learn here')\n")
    code = (
        "import mnist_mlp\ntry:\n    mnist_mlp.MLPClassifier\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert (
        out.stdout.strip()
        == "mnist_mlp.MLPClassifier needs scikit-learn: pip install 'mnist-mlp[sklearn]'"
    )
    # and nothing else needs it
    out = subprocess.run(
        [sys.executable, "-c", "import mnist_mlp.cli, mnist_mlp.train"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr


def test_other_input_sizes_train_through_the_core(digits):
    # 64 features and 10 classes, not 784 and 10: the core takes its sizes from the data
    X, y = digits
    clf = small(max_iter=3, hidden_layer_sizes=(20, 12), activation="tanh", dropout=0.1).fit(
        X, y % 3
    )
    assert [w.shape for w in clf.coefs_] == [(64, 20), (20, 12), (12, 3)]


# --- on real MNIST ------------------------------------------------------------------------------


@pytest.mark.realdata
def test_load_mnist_and_prepare_image(real_env, tmp_path):
    from imagegen import drawn

    (x_train, y_train), (x_test, y_test) = mnist_mlp.load_mnist(progress=False)
    assert x_train.shape == (60000, 784) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 784) and y_test.shape == (10000,)
    assert np.bincount(y_train).tolist()[:3] == [5923, 6742, 5958]
    (square, _), _ = mnist_mlp.load_mnist(progress=False, flatten=False)
    assert square.shape == (60000, 28, 28)
    with pytest.raises(MlpError, match="unknown dataset 'cifar'"):
        mnist_mlp.load_mnist("cifar")
    path = tmp_path / "seven.png"
    drawn(7, 30, canvas=300).save(path)
    pixels = mnist_mlp.prepare_image(path)
    assert pixels.shape == (28, 28) and pixels.dtype == np.float32 and 200 < pixels.max() <= 255


@pytest.mark.realdata
def test_a_cli_checkpoint_predicts_what_mlp_eval_predicts(real_env, smoke_checkpoint):
    clf = MLPClassifier.from_checkpoint(smoke_checkpoint)
    (_, _), (x_test, y_test) = mnist_mlp.load_mnist(progress=False)
    evaluated = evaluation.evaluate_on(smoke_checkpoint, "test", progress=False)
    np.testing.assert_array_equal(clf.predict(x_test), evaluated.metrics.predictions)
    assert clf.score(x_test, y_test) == pytest.approx(evaluated.metrics.accuracy)
    assert clf.class_names_ == [str(d) for d in range(10)]


@pytest.mark.realdata
def test_a_notebook_net_is_read_by_mlp_eval(real_env, tmp_path):
    from click.testing import CliRunner

    from mnist_mlp.cli import main

    (x_train, y_train), (x_test, y_test) = mnist_mlp.load_mnist(progress=False)
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=2, random_state=0).fit(
        x_train[:10000], y_train[:10000]
    )
    accuracy = clf.score(x_test, y_test)
    path = tmp_path / "notebook.npz"
    clf.save_checkpoint(path)
    result = CliRunner().invoke(main, ["eval", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["accuracy"] == pytest.approx(accuracy)
