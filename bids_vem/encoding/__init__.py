"""Encoding stage: design matrices, BOLD loading and cleaning, ridge with per-voxel penalties, CV.

Modules: ``design`` (feature time courses, FIR delays), ``bold`` (masking and cleaning, the
cleaned BOLD written once to a voxel store), ``voxel_data`` (voxel chunks read from memory or
from the store on disk), ``chunks`` (chunk size from ``--mem``, halved on GPU out-of-memory),
``ridge`` (the solver), ``evaluation`` (test runs, repeated test runs, held-out scores),
``model`` (the encoding model; ``encode_runs`` is what the workflow calls), ``stats`` (group
t-test and FDR), ``device`` (torch device and threads).
Import from the modules; this package imports nothing so that ``ridge`` stays light.
"""
