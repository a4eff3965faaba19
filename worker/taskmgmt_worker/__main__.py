import sys

from taskmgmt_worker.cli import main

sys.exit(main())
