"""The harness the benchmarks and the tests share: processes we start (and always stop), waiting.

The tests import it; it never imports the tests.
"""
