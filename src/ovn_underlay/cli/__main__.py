"""``python -m ovn_underlay.cli``: the ``ovn-k8s-underlay`` command line."""

import sys

from ovn_underlay.cli.main import main

sys.exit(main())
