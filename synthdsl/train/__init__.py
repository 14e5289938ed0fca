"""Training, distillation, evaluation and the demo, for compiled specs.

Each module has one job; the arrows say what each reads (nothing here imports
:mod:`synthdsl.cli`, and nothing takes command-line arguments):

* :mod:`~synthdsl.train.run` — :func:`~synthdsl.train.run.train` (a compiled spec on data,
  in a run folder) and :func:`~synthdsl.train.run.train_spec` (what ``synth train`` does)
  → trainer, records, evaluate, data
* :mod:`~synthdsl.train.trainer` — the :class:`~synthdsl.train.trainer.Trainer`: batches,
  forward, losses, optimizer steps, checkpoints, validation
  → optim, options, losses, frozen, distributed, checkpoint, predict, preprocess
* :mod:`~synthdsl.train.records` — ``run.json``, the lines of ``log.jsonl``, the result
* :mod:`~synthdsl.train.options` — how to run (device, precision, caching, checkpoints);
  :mod:`~synthdsl.train.recipe` — how to optimise; :mod:`~synthdsl.train.optim` — the
  optimizer and schedule a recipe asks for
* :mod:`~synthdsl.train.losses` — the spec's ``loss`` statements and teachers;
  :mod:`~synthdsl.train.frozen` — the frozen prefix, run without autograd, and its cache
* :mod:`~synthdsl.train.distributed` — torchrun: the process group, shares, sums
* :mod:`~synthdsl.train.checkpoint` — checkpoints and random state
* :mod:`~synthdsl.train.images` (datasets) ← :mod:`~synthdsl.train.data` (where they come
  from); :mod:`~synthdsl.train.preprocess` — what a model takes from them
* :mod:`~synthdsl.train.predict` — outputs over a dataset, ensemble members too;
  :mod:`~synthdsl.train.evaluate` — loading what to evaluate, the report;
  :mod:`~synthdsl.train.metrics` — the figures (equal to scikit-learn's) and plots
* :mod:`~synthdsl.train.demo` and :mod:`~synthdsl.train.demo_report` — ``synth demo``
* :mod:`~synthdsl.train.errors` — TrainError, DataError, EvalError
"""
