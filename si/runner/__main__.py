"""``python -m si.runner <instance dir>``: the process the hub starts for one instance."""

import sys

from si.runner.process import main

if __name__ == "__main__":
    main(sys.argv)
