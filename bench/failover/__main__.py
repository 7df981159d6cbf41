"""``python -m bench.failover``: the failover benchmark's command line (``bench.failover.cli``)."""

from bench.failover.cli import main

if __name__ == "__main__":
    main()
