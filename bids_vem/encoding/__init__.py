"""Encoding stage: design matrices, BOLD cleaning, ridge with per-voxel penalties, CV, statistics.

Modules: ``design`` (feature time courses, FIR delays), ``bold`` (masking and cleaning),
``ridge`` (the solver), ``model`` (nested leave-one-run-out CV; ``encode_runs`` is what the
workflow calls), ``stats`` (group t-test and FDR), ``device`` (torch device and threads).
Import from the modules; this package imports nothing so that ``ridge`` stays light.
"""
