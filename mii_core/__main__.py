import sys

from mii_core.cli import main

sys.exit(main())
