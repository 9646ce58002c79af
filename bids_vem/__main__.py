"""``python -m bids_vem`` runs the command line."""

import sys

from bids_vem.cli.run import main

sys.exit(main())
