import sys

from diffgeo.cli import main

sys.exit(main())
