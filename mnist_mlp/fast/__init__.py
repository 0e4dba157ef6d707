"""The fast path: the training step as :mod:`mnist_mlp.train` runs it.

:mod:`mnist_mlp.model` defines the network in plain NumPy, to be read. This package computes
the same step with every trick that pays on a CPU, each tested equal to the reference
(``tests/fast/``):

- :mod:`~mnist_mlp.fast.step`: the training step (:class:`~mnist_mlp.fast.step.Step`), with a
  forward pass that works in place and a backward pass that hands each weight gradient over
  as the two factors of its matrix product, never storing it;
- :mod:`~mnist_mlp.fast.sgd`: the updates that take those factors: :class:`FusedSGD`
  (classical momentum; BLAS multiplies the gradient straight into the update) and
  :class:`BufferedSGD` (Nesterov's, through :func:`mnist_mlp.optim.sgd_step`);
- :mod:`~mnist_mlp.fast.inked`: a batch with its blank pixel columns left out
  (:class:`~mnist_mlp.fast.inked.InkedColumns`);
- :mod:`~mnist_mlp.fast.blas`: two BLAS routines NumPy does not expose;
- :mod:`~mnist_mlp.fast.kernels`: small C loops (``_kernels.c``) that fuse NumPy's passes.

Nothing here changes what is computed, only how fast: ``tests/fast/test_fast_step.py`` trains with
:class:`~mnist_mlp.fast.step.Step` and with :func:`mnist_mlp.model.loss_and_grads` and
:func:`mnist_mlp.optim.sgd_step`, and finds the same weights.
"""
