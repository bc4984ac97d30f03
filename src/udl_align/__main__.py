import sys

from udl_align.cli import main

sys.exit(main())
