import sys

from ctxopt.cli import main

sys.exit(main())
