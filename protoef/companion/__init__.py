"""Glue for the paper-companion notebooks: each notebook calls these, nothing more.

    notebook.py   the profile switch, where runs and figures live, "train unless finished"
    studies.py    the multi-run studies: seeds, PAS weights, τ × Δl, the two recipes
    executors.py  how a study's runs launch: in turn, one process per GPU, SLURM
    tables.py     run tables, mean ± std, paired intervals, IoU summaries
    figures.py    every notebook figure
    claims.py     each notebook's claim check and the generated results file
"""
