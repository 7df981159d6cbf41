"""``python -m bench.serving``: the serving benchmark's command line (``bench.serving.cli``)."""

from bench.serving.cli import main

if __name__ == "__main__":
    main()
