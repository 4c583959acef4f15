#!/usr/bin/env python3
"""kubepresence's local single-node Kubernetes cluster.

Usage: cluster.py {prepare,up,down,status,logs,kubeconfig,ws} (see --help).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kpcluster.cli import main

if __name__ == "__main__":
    sys.exit(main())
