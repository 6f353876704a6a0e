"""`python -m aisystant_server.simulator`: run the Messages API simulator."""

# First thing in the process, before anything imports sockets or threads.
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from aisystant_server.simulator import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
