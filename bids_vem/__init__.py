"""bids_vem: language-aligned vision models as voxelwise encoding models of fMRI, as a BIDS App."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bids_vem")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
