"""The estimator's bookkeeping after each epoch, as scikit-learn's MLP keeps it: the loss curve,
the validation scores, the best so far, and when to stop (``tol``, ``n_iter_no_change``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mnist_mlp.callbacks import Callback, StopFlag

if TYPE_CHECKING:
    from mnist_mlp.train import State


class Curves(Callback):
    """Records each epoch into the estimator's fitted attributes, and stops the fit (through
    ``stop``) when neither the training loss nor, with early stopping, the validation score
    improves by ``tol`` for ``n_iter_no_change`` epochs (not in ``partial_fit``)."""

    def __init__(self, estimator: Any, stop: StopFlag, incremental: bool, n: int):
        self.est, self.stop, self.incremental, self.n = estimator, stop, incremental, n

    def on_epoch_end(self, state: State, row: dict, is_best: bool) -> None:
        self._record(row)
        self.est.t_ += self.n

    def _record(self, row: dict) -> None:
        """Per epoch: the curves, the best so far, and whether to stop (as scikit-learn's MLP)."""
        est = self.est
        loss = row["train_loss"]
        est.loss_curve_.append(loss)
        if est.validation_scores_ is not None and est.best_validation_score_ is not None:
            score = row["val_acc"]
            est.validation_scores_.append(score)
            if score > est.best_validation_score_ + est.tol:
                est._no_improvement = 0
            else:
                est._no_improvement += 1
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_params = {k: v.copy() for k, v in est._state.evaluated.items()}
        elif est.best_loss_ is not None:
            if loss > est.best_loss_ - est.tol:
                est._no_improvement += 1
            else:
                est._no_improvement = 0
            est.best_loss_ = min(est.best_loss_, loss)
        if est.verbose:
            val = f", validation accuracy = {row['val_acc']:.4f}" if est.early_stopping else ""
            print(f"Iteration {row['epoch']}, loss = {loss:.8f}{val}")
        if est._no_improvement >= est.n_iter_no_change and not self.incremental:
            what = "validation accuracy" if est.early_stopping else "training loss"
            if est.verbose:
                print(
                    f"{what} did not improve more than tol={est.tol} for "
                    f"{est.n_iter_no_change} consecutive epochs: stopping"
                )
            self.stop.requested = True
