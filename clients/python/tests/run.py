"""Runs the Python client tests (unittest) and ends with "# pass N" / "# fail M"
for test/clients.sh.  Arguments: test files (default: test_*.py here)."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

files = sys.argv[1:] or sorted(os.path.join(HERE, f) for f in os.listdir(HERE)
                               if f.startswith("test_") and f.endswith(".py"))
loader = unittest.TestLoader()
suite = unittest.TestSuite()
for f in files:
    suite.addTests(loader.loadTestsFromName(os.path.splitext(os.path.basename(f))[0]))
result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
skipped = len(result.skipped)
passed = result.testsRun - failed - skipped
print("# pass %d" % passed)
print("# fail %d" % failed)
print("# skip %d" % skipped)
sys.exit(1 if failed else 0)
