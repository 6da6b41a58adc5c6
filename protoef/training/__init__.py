"""One training run, from a config to a finished run directory.

    build.py      everything built from a config: data root, datasets, loaders, model, loss,
                  optimiser, device context; and a trained model back from a run directory
    loops.py      one epoch of training, prediction, evaluation
    push.py       the prototype projection (docs/method.md §4), nothing else
    lifecycle.py  `fit`: train → best checkpoint → push → head epochs → test → files
    runs.py       the run directory: atomic files, checkpoints, the writer lock, config matching
    warmstart.py  the synthetic warm start that stands in for Kinetics-400
    tracking.py   optional TensorBoard logging
"""
