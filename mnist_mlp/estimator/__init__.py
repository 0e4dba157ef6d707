"""``mnist_mlp.MLPClassifier``: this project's network behind scikit-learn's estimator API.

``fit(X, y)``, ``predict``, ``predict_proba``, ``score``, pipelines, grid search and
cross-validation, as with scikit-learn's own ``MLPClassifier``; underneath, the training loop
of ``mlp train`` (:func:`mnist_mlp.train.fit`) and its fast step (:mod:`mnist_mlp.fast`), with
what scikit-learn's MLP lacks: dropout, max-norm, label smoothing, learning-rate schedules,
distortions of 28x28 digits, and checkpoints that ``mlp eval``, ``predict``, ``serve`` and
``export`` read.

Parameters that mean the same as scikit-learn's have its names; their defaults are this
project's (``configs/default.yaml``: the 784-1024-10 net, 20 epochs of SGD with momentum and a
cosine schedule), so that ``fit`` on MNIST trains what ``mlp train`` trains. Each is checked by
the config's own rules (:mod:`mnist_mlp.config`) and a bad one is a one-line
:class:`ParameterError` naming it.

Needs the optional ``sklearn`` extra (``pip install 'mnist-mlp[sklearn]'``); this is the only
module that imports scikit-learn.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlp import augment, metrics, model, normalise, run, train, tta
from mnist_mlp import checkpoint as ckpt_mod
from mnist_mlp import config as config_mod
from mnist_mlp import data as data_mod
from mnist_mlp.callbacks import StopFlag
from mnist_mlp.estimator.curves import Curves
from mnist_mlp.estimator.params import (
    CONFIG_KEYS,
    ParameterError,
    config_of,
    config_value,
    layer_table,
    plain,
    positions,
    scaling_of,
    seed_of,
    validation_split,
    with_training,
)
from mnist_mlp.fast import blas, kernels
from mnist_mlp.step import Momentum

INSTALL_HINT = "mnist_mlp.MLPClassifier needs scikit-learn: pip install 'mnist-mlp[sklearn]'"

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError:  # pragma: no cover - exercised by a test in a subprocess without sklearn
    raise ImportError(INSTALL_HINT) from None


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """A multilayer perceptron trained by minibatch SGD, from this project's NumPy code.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(1024,)
        The width of each hidden layer.
    activation : {"relu", "logistic", "tanh"}, default="relu"
        The hidden layers' activation ("sigmoid" is accepted for "logistic").
    alpha : float, default=5e-4
        L2 penalty on the weights (not the biases).
    batch_size : int or "auto", default=128
        Minibatch size; "auto" is min(200, n_samples), as scikit-learn's.
    learning_rate_init : float, default=0.05
        The peak learning rate (see ``schedule``).
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=False
        Nesterov's momentum instead of classical momentum (which the fused update runs).
    max_iter : int, default=20
        Epochs (each a full pass over the training data).
    shuffle : bool, default=True
        A new order of the examples every epoch.
    random_state : int, RandomState or None, default=None
        Seeds the initial weights, the shuffling, dropout, distortions and the validation split.
        None: a new seed on each fit.
    tol : float, default=1e-4
        Improvement that counts, for stopping: of the training loss, or of the validation
        accuracy with ``early_stopping``.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop when its
        accuracy has not improved by ``tol`` for ``n_iter_no_change`` epochs, and keep the
        weights of the best epoch.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    warm_start : bool, default=False
        ``fit`` continues from the previous fit's weights instead of starting anew.
    verbose : bool, default=False
        A progress bar per epoch (``tqdm.auto``: it renders in notebooks) and a line per epoch.
    dropout : float, default=0.0
        Probability of dropping each hidden neuron while training.
    max_norm : float, default=0.0
        Cap on the norm of each hidden neuron's incoming weights (0: none).
    label_smoothing : float, default=0.0
    schedule : {"cosine", "constant", "step"}, default="cosine"
        The learning rate over the ``max_iter`` epochs.
    warmup_epochs : float, default=0.0
    augment : dict or None, default=None
        Random distortions of each training batch, for 28x28 digit images given as 0..255
        pixels: the keys of the config's ``data.augment`` (``rotate``, ``scale``, ``shear``,
        ``translate``, ``elastic_alpha``, ``elastic_sigma``, ``flip``, ``probability``).
    tta : int, default=1
        Views of each digit (28x28 pixels) its predicted probabilities are averaged over (shifts,
        turns, sizes; :mod:`mnist_mlp.tta`); 1: the digit as it is.
    report_to : list of {"tensorboard", "mlflow"} or None, default=None
        Trackers each fit is sent to, as ``mlp train --report-to`` sends a run: the events, the
        MLflow run and model of a fit go to its own folder ``runs/MLPClassifier-<time>-...``.
    skip_blank_pixels : bool, default=True
        Leave the pixel columns blank in a whole batch out of the first layer's products (the
        same result, faster), where the data are uint8 pixels.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Where ``X`` had string column names (a DataFrame).
    coefs_ : list of ndarray
        ``coefs_[i]`` of shape (fan_in, fan_out): the weights of layer i + 1, as scikit-learn's.
    intercepts_ : list of ndarray
    loss_curve_ : list of float
        The mean training loss of each epoch.
    validation_scores_ : list of float or None
        The validation accuracy of each epoch, with ``early_stopping``.
    best_loss_ : float or None
        The lowest training loss (None with ``early_stopping``, as scikit-learn's).
    best_validation_score_ : float or None
    n_iter_ : int
        Epochs run.
    t_ : int
        Training examples seen.
    input_scaling_ : tuple of (float, float)
        (scale, offset): the network's input is ``X * scale + offset``, learned from the first
        fit's data (their mean and standard deviation), as ``mlp train`` standardises pixels.
    fit_info_ : dict
        ``seconds`` of the last fit, ``blas_threads`` it ran with, whether the compiled
        ``kernels`` ran.
    """

    _state: train.State

    def __init__(
        self,
        hidden_layer_sizes=(1024,),
        activation="relu",
        *,
        alpha=5e-4,
        batch_size=128,
        learning_rate_init=0.05,
        momentum=0.9,
        nesterovs_momentum=False,
        max_iter=20,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        warm_start=False,
        verbose=False,
        dropout=0.0,
        max_norm=0.0,
        label_smoothing=0.0,
        schedule="cosine",
        warmup_epochs=0.0,
        augment=None,
        skip_blank_pixels=True,
        tta=1,
        report_to=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.verbose = verbose
        self.dropout = dropout
        self.max_norm = max_norm
        self.label_smoothing = label_smoothing
        self.schedule = schedule
        self.warmup_epochs = warmup_epochs
        self.augment = augment
        self.skip_blank_pixels = skip_blank_pixels
        self.tta = tta
        self.report_to = report_to

    # --- the config these parameters make ----------------------------------------------------

    # --- fitting ----------------------------------------------------------------------------

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and ``y`` (n_samples,); return self.

        ``X`` as given: MNIST's 0..255 pixels (uint8 keeps memory low and lets blank pixel
        columns be skipped) or any real features. Labels may be of any kind (strings too).
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch over ``X``, ``y``, continuing from the current weights; return self.

        ``classes`` (every label there will be) is needed on the first call. The learning rate
        stays at ``learning_rate_init`` (a schedule needs to know the epochs to come).
        """
        if not hasattr(self, "classes_") and classes is None:
            raise ParameterError(
                "MLPClassifier: classes must be given on the first call to partial_fit "
                "(every label there will be)"
            )
        return self._fit(X, y, incremental=True, classes=classes)

    def _fit(self, X, y, incremental: bool, classes=None):
        first = not (incremental or self.warm_start) or not hasattr(self, "_state")
        X, labels = self._checked(X, y, first, classes)
        if first:
            self._seed = seed_of(self.random_state)
            self.input_scaling_ = scaling_of(X)
        config = config_of(self, len(X), self._seed)
        if config.data.augment.enabled and (X.dtype != np.uint8 or X.shape[1] != model.N_INPUTS):
            raise ParameterError(
                "MLPClassifier: augment distorts 28x28 digits given as uint8 pixels (n_features "
                f"784, dtype uint8); got {X.shape[1]} features of {X.dtype}"
            )
        data = self._data(X, labels, config)
        if first:
            self._reset(config, X.shape[1])
        # Epochs counted from where this call starts; one for partial_fit, at a constant rate.
        done = self._state.epoch
        if incremental:
            config = with_training(config, epochs=done + 1, schedule="constant", warmup_epochs=0.0)
        else:
            config = with_training(config, epochs=done + config.training.epochs)
        started = time.perf_counter()
        folder, trackers = self._trackers(config, data)
        state = self._train(config, data, incremental, trackers)
        if self.early_stopping and self._best_params is not None:
            # the best epoch's weights, as scikit-learn keeps them; their momentum is gone
            state.params = {k: v.copy() for k, v in self._best_params.items()}
            state.momentum = Momentum.zeros(state.params)
        self._state, self._config_used = state, config
        self._set_fitted(state.params, state.epoch)
        self.fit_info_ = {
            "seconds": time.perf_counter() - started,
            "blas_threads": blas.thread_count(),
            "kernels": kernels.AVAILABLE,
        }
        if trackers:
            assert folder is not None
            self._report(folder, trackers, data)
        return self

    def _train(self, config, data, incremental: bool, trackers: list) -> train.State:
        """The loop over ``data``, with the estimator's bookkeeping and the trackers."""
        stop = StopFlag()
        record = Curves(self, stop, incremental, len(data.train))
        progress: Any = False
        if self.verbose:
            from tqdm.auto import tqdm

            progress = tqdm
        return train.fit(
            config,
            data,
            self._state,
            callbacks=[record, *trackers],
            stop=stop,
            progress=progress,
            augment=augment.for_config(config.data.augment),
        )

    def _trackers(self, config, data) -> tuple[Path | None, list]:
        """The fit's own folder and trackers, where ``report_to`` names any."""
        if not config.output.report_to:
            return None, []
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_FITS)}"
        folder = Path(config.output.dir) / f"MLPClassifier-{stamp}"
        return folder, run.open_trackers(config, folder, data, run.to_stderr)

    def _report(self, folder: Path, trackers: list, data) -> None:
        """The fitted net's checkpoint in the fit's folder, and the trackers told of its end."""
        self.save_checkpoint(folder / "checkpoint.npz")
        finals = run.best_of(self._state)
        for line in run.end_trackers(trackers, folder, data, None, finals, checkpoint=True):
            run.to_stderr(line)

    def _checked(self, X, y, first: bool, classes) -> tuple[np.ndarray, np.ndarray]:
        """``X`` validated, and ``y`` as positions in ``classes_`` (set on a first fit)."""
        X, y = validate_data(self, X, y, reset=first, dtype=[np.float32, np.float64, np.uint8])
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(y) if classes is None else np.unique(np.asarray(classes))
        return X, positions(self.classes_, y)

    def _data(self, X, labels, config) -> data_mod.Data:
        fraction = self.validation_fraction if self.early_stopping else 0.0
        train_x, train_y, val_x, val_y = validation_split(X, labels, fraction, self._seed)
        return data_mod.Data(
            "arrays",
            tuple(str(c) for c in self.classes_),
            "",
            train=data_mod.Split(train_x, train_y),
            val=data_mod.Split(val_x, val_y),
            test=data_mod.Split(val_x[:0], val_y[:0]),
            scaling=self.input_scaling_,
        )

    def _reset(self, config: config_mod.Config, n_features: int) -> None:
        """A new network and empty curves, for a first fit."""
        self._state = train.new_state(config, n_features, len(self.classes_))
        self.loss_curve_: list[float] = []
        self.t_ = 0
        self.validation_scores_: list[float] | None = [] if self.early_stopping else None
        self.best_loss_: float | None = math.inf if not self.early_stopping else None
        self.best_validation_score_: float | None = -math.inf if self.early_stopping else None
        self._best_params: model.Params | None = None
        self._no_improvement = 0

    def _set_fitted(self, params: model.Params, epochs: int) -> None:
        """The fitted attributes scikit-learn's MLP has, from the parameters."""
        layers = range(1, model.n_layers(params) + 1)
        self.coefs_ = [params[f"W{l}"] for l in layers]
        self.intercepts_ = [params[f"b{l}"] for l in layers]
        self.n_iter_ = epochs
        self.n_layers_ = len(self.coefs_) + 1
        self.n_outputs_ = len(self.classes_)
        self.out_activation_ = "softmax"

    # --- predicting ---------------------------------------------------------------------------

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, ndarray of shape (n_samples, n_classes), columns as ``classes_``."""
        check_is_fitted(self, "_state")
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64, np.uint8])
        X = normalise.as_trained(X, self._config_used)  # a checkpoint's view of the digits
        forward = functools.partial(
            metrics.probabilities,
            self._state.params,
            self._state_activation(),
            scaling=self.input_scaling_,
        )
        return tta.of_pixels(forward, X, self.tta)

    def predict_log_proba(self, X) -> np.ndarray:
        """The log of :meth:`predict_proba` (zero probabilities give -inf)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample, ndarray of shape (n_samples,)."""
        best = self.predict_proba(X).argmax(axis=1)  # first: it says when not fitted
        return self.classes_[best]

    def _state_activation(self) -> str:
        return self._config_used.model.activation

    # --- checkpoints: the bridge to the command line -----------------------------------------

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write the fitted net as a checkpoint that ``mlp eval / predict / serve / export`` read.

        The file holds arrays and JSON, no pickle: the labels are kept as JSON values
        (strings, numbers, booleans).
        """
        check_is_fitted(self, "_state")
        values = [plain(v) for v in self.classes_.tolist()]
        n = self.n_features_in_
        meta = {
            "dataset": {"name": "mnist" if n == model.N_INPUTS else "arrays", "digest": None},
            "classes": [str(c) for c in self.classes_],
            "label_values": values,
            "input": {
                "scale": float(self.input_scaling_[0]),
                "offset": float(self.input_scaling_[1]),
                "shape": [28, 28] if n == model.N_INPUTS else [n],
            },
            "estimator": {"loss_curve": self.loss_curve_, "t": self.t_},
            **self._state.meta(),
        }
        ckpt_mod.save(
            path,
            ckpt_mod.Checkpoint(
                self._state.params, self._config_used, meta, self._state.momentum.buffers
            ),
        )

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> MLPClassifier:
        """A fitted estimator from a checkpoint of ``mlp train`` or of :meth:`save_checkpoint`.

        A checkpoint of ``mlp train`` predicts its dataset's label numbers (0..9, as
        :func:`mnist_mlp.load_mnist` returns them); its class names are ``class_names_``.
        """
        ckpt = ckpt_mod.load(path)
        settings = {
            name: plain(config_value(ckpt.config, key)) for name, key in CONFIG_KEYS.items()
        }
        settings["hidden_layer_sizes"] = tuple(settings["hidden_layer_sizes"])
        settings["activation"] = {"sigmoid": "logistic"}.get(ckpt.activation, ckpt.activation)
        clf = cls(**settings, random_state=ckpt.config.training.seed)
        values = ckpt.meta.get("label_values")
        clf.classes_ = np.array(values) if values is not None else np.arange(len(ckpt.classes))
        clf.class_names_ = list(ckpt.classes)
        clf.n_features_in_ = ckpt.sizes[0]
        clf.input_scaling_ = ckpt.scaling
        clf._seed = ckpt.config.training.seed
        clf._config_used = ckpt.config
        clf._state = train.State.from_meta(ckpt.params, ckpt.momentum, ckpt.meta)
        clf._set_fitted(ckpt.params, clf._state.epoch)
        clf.loss_curve_ = [row["train_loss"] for row in ckpt.meta.get("history", [])]
        clf.t_ = 0
        return clf

    # --- for a person ---------------------------------------------------------------------------

    def summary(self) -> str:
        """The layers and their parameter counts, as a small table (Keras's ``summary``)."""
        if hasattr(self, "coefs_"):
            sizes = [self.coefs_[0].shape[0], *(w.shape[1] for w in self.coefs_)]
        else:
            hidden = self.hidden_layer_sizes
            hidden = [hidden] if isinstance(hidden, int) else list(hidden)
            sizes = [
                getattr(self, "n_features_in_", model.N_INPUTS),
                *hidden,
                len(getattr(self, "classes_", range(model.N_CLASSES))),
            ]
        lines = layer_table(sizes, self.activation)
        state = f"fitted: {self.n_iter_} epochs" if hasattr(self, "n_iter_") else "not fitted"
        lines.append(state)
        return "\n".join(lines)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


# --- helpers --------------------------------------------------------------------------------------


_FITS = itertools.count()
