"""A small simulated BIDS dataset with ground truth, to try bids_vem offline in minutes.

Run ``python -m bids_vem.demo ROOT`` or call :func:`make_demo_dataset`.
"""

from bids_vem.demo.simulate import DemoParameters, DemoPaths, make_demo_dataset

__all__ = ["DemoParameters", "DemoPaths", "make_demo_dataset"]
